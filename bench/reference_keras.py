"""The Keras reference: the classic example, timed in-process (the `fit` call only).
Used by bench/run.py when `keras` and `tensorflow` import (`make bench-keras` installs them).
Prints one JSON line: {"train_seconds": ..., "final_loss": ...}."""
import json
import time

import numpy as np
import keras

x = np.random.normal(size=(1000, 10)).astype("float32")
y = np.random.normal(size=(1000, 1)).astype("float32")
model = keras.Sequential([keras.Input(shape=(10,)), keras.layers.Dense(10, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001), loss="mse", metrics=["mae"])
start = time.perf_counter()
history = model.fit(x, y, epochs=100, batch_size=32, verbose=0)
seconds = time.perf_counter() - start
print(json.dumps({"train_seconds": seconds, "final_loss": history.history["loss"][-1]}))
