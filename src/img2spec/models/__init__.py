"""img2spec.models: the spectrum VAE, the image CNN, their training and inference.

Public API: `train.train_vae`, `train.train_cnn`, `inference.predict_spectra`,
`inference.load_models`, `latents.Latents`.
"""
