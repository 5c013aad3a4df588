"""`compile_adam`: the optimiser's slots exist before `fit`, so the first train step is traced once."""

import numpy as np


def test_slots_are_built_at_compile_and_the_train_step_is_traced_once(monkeypatch):
    import keras
    from keras import ops

    from img2spec.models.optimizer import CLIPNORM, compile_adam

    class Squares(keras.Model):  # like the trainers: the loss is the model's own
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return ops.mean((y_pred - y) ** 2)

    model = Squares()
    model(np.zeros((1, 3), np.float32))
    compile_adam(model, 1e-3)
    assert model.optimizer.built and model.optimizer.clipnorm == CLIPNORM
    # m and v for the kernel, besides those of the bias, the iteration counter and the learning rate
    assert sum(v.shape == (3, 2) for v in model.optimizer.variables) == 2

    traces = []
    step = Squares.train_step
    monkeypatch.setattr(Squares, "train_step", lambda self, data: traces.append(1) or step(self, data))
    x = np.ones((8, 3), np.float32)
    model.fit(x, x[:, :2], batch_size=4, epochs=2, verbose=0)
    assert len(traces) == 1
