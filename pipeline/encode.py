"""DVC stage `encode`: encode spectra into VAE latents."""

from _stage import not_implemented, run_stage

if __name__ == "__main__":
    run_stage("encode", not_implemented(6), __doc__)
