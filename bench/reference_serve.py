"""The hand-made route that `torchfit serve` replaces: FastAPI + uvicorn (one worker) serving
a model.pt with torch.jit.load and one torch thread, on the same /predict body.

    PYTHONPATH=<torch>:<fastapi> python3 bench/reference_serve.py MODEL.pt PORT
"""
import sys

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

torch.set_num_threads(1)
model = torch.jit.load(sys.argv[1])
model.eval()
app = FastAPI()


class Body(BaseModel):
    instances: list[list[float]]


@app.post("/predict")
def predict(body: Body):
    with torch.no_grad():
        y = model(torch.tensor(body.instances, dtype=torch.float32))
    return {"predictions": y.squeeze(1).tolist()}


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), workers=1, log_level="warning", access_log=False)
