"""Writes the small example datasets in data/ (committed; rerun to regenerate them exactly).

- data/housing.csv: regression. House price (in thousands) from rooms, area, age, distance to
  the centre and a garden flag, with a nonlinear relation, noise, and a few missing cells.
- data/penguins.csv: classification. Three species with string labels from four body
  measurements, overlapping a little.

Standard library only, seeded, so the files are the same on every machine.
"""
import csv
import math
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "data"


def housing(rng, rows=600):
    out = []
    for _ in range(rows):
        rooms = rng.randint(1, 7)
        area = round(rng.uniform(25, 40) * rooms + rng.gauss(0, 8), 1)
        age = rng.randint(0, 80)
        distance = round(rng.uniform(0.5, 25.0), 2)
        garden = rng.randint(0, 1)
        price = 40 + 2.1 * area + 12 * rooms - 0.6 * age + 90 * math.exp(-distance / 6) + 25 * garden
        price += rng.gauss(0, 10)
        row = [rooms, area, age, distance, garden, round(price, 1)]
        if rng.random() < 0.03:
            row[rng.randint(1, 3)] = ""  # a missing area, age or distance
        out.append(row)
    return ["rooms", "area", "age", "distance_km", "garden", "price"], out


def penguins(rng, rows=450):
    species = {
        # bill length, bill depth, flipper length, body mass: means and spreads
        "Adelie": ((38.8, 2.7), (18.3, 1.2), (190, 6.5), (3700, 460)),
        "Chinstrap": ((48.8, 3.3), (18.4, 1.1), (196, 7.1), (3730, 380)),
        "Gentoo": ((47.5, 3.1), (15.0, 1.0), (217, 6.5), (5080, 500)),
    }
    names = list(species)
    out = []
    for i in range(rows):
        name = names[i % 3]
        values = [round(rng.gauss(m, s), 1) for m, s in species[name]]
        out.append(values + [name])
    rng.shuffle(out)
    return ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "species"], out


def write(name, header, rows):
    ROOT.mkdir(exist_ok=True)
    with open(ROOT / name, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


if __name__ == "__main__":
    write("housing.csv", *housing(random.Random(1)))
    write("penguins.csv", *penguins(random.Random(2)))
