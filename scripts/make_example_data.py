"""Writes the small example datasets in data/ (committed; rerun to regenerate them exactly).

- data/housing.csv: regression. House price (in thousands) from rooms, area, age, distance to
  the centre and a garden flag, with a nonlinear relation, noise, and a few missing cells.
- data/penguins.csv: classification. Three species with string labels from four body
  measurements, overlapping a little.
- data/titanic.csv: classification, a table as users bring it. Survival (0/1) of 891
  passengers from text columns (sex, embarked, deck, alone as yes/no), an integer-coded class
  (pclass 1/2/3, a category rather than a quantity), age and fare, with empty cells in age,
  embarked and (mostly) deck. Who survives depends on sex and class together (women in third
  class fare far worse than women in first), so a model needs the text columns to do well.
- data/diamonds.csv: regression. Price of 2000 diamonds from carat, cut (5 ordered levels),
  colour (D-J), clarity (8 levels), depth and table, with a few `NA` cells in depth, table and
  colour. log(price) is linear in log(carat) plus an effect per cut, colour and clarity level.

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


def titanic(rng, rows=891):
    # P(survived) by sex and class, roughly the 1912 rates.
    base = {("female", 1): 0.97, ("female", 2): 0.92, ("female", 3): 0.50,
            ("male", 1): 0.37, ("male", 2): 0.10, ("male", 3): 0.10}
    out = []
    for _ in range(rows):
        pclass = rng.choices([1, 2, 3], weights=[216, 184, 491])[0]
        sex = "female" if rng.random() < (0.44, 0.41, 0.29)[pclass - 1] else "male"
        age = max(0.4, min(80.0, rng.gauss((38, 30, 25)[pclass - 1], 13)))
        alone = rng.random() < (0.50 if sex == "female" else 0.70) * (1.15 if pclass == 3 else 0.9)
        embarked = rng.choices("SCQ", weights=((60, 38, 2), (87, 9, 4), (70, 12, 18))[pclass - 1])[0]
        fare = math.exp(rng.gauss((4.2, 2.9, 2.2)[pclass - 1], 0.45)) * (1.0 if alone else 1.6)
        deck = rng.choice("ABCDE") if pclass == 1 else rng.choice("DEF") if pclass == 2 else rng.choice("EFG")
        p = base[(sex, pclass)]
        if age < 10:
            p = min(0.97, p + 0.35)  # children first
        elif age > 60:
            p *= 0.6
        if alone:
            p *= 0.85
        if embarked == "C":
            p = min(0.97, p * 1.15)
        survived = int(rng.random() < p)
        has_deck = rng.random() < (0.80, 0.10, 0.03)[pclass - 1]
        row = [pclass, sex, round(age) if age >= 1 else round(age, 2), round(fare, 2), embarked,
               deck if has_deck else "", "yes" if alone else "no", survived]
        if rng.random() < 0.20:
            row[2] = ""  # age unknown, as for a fifth of the real passengers
        if rng.random() < 0.01:
            row[4] = ""
        out.append(row)
    return ["pclass", "sex", "age", "fare", "embarked", "deck", "alone", "survived"], out


def diamonds(rng, rows=2000):
    cuts = {"Fair": -0.25, "Good": -0.1, "Very Good": 0.0, "Premium": 0.05, "Ideal": 0.1}
    colors = {"D": 0.30, "E": 0.22, "F": 0.15, "G": 0.06, "H": -0.06, "I": -0.22, "J": -0.40}
    clarities = {"I1": -0.85, "SI2": -0.35, "SI1": -0.15, "VS2": 0.0, "VS1": 0.08, "VVS2": 0.22,
                 "VVS1": 0.32, "IF": 0.45}
    out = []
    for _ in range(rows):
        carat = round(min(3.0, max(0.2, math.exp(rng.gauss(-0.45, 0.55)))), 2)
        cut = rng.choices(list(cuts), weights=[3, 9, 22, 26, 40])[0]
        color = rng.choices(list(colors), weights=[12, 18, 18, 21, 15, 10, 6])[0]
        clarity = rng.choices(list(clarities), weights=[2, 17, 24, 23, 15, 9, 7, 3])[0]
        depth = round(rng.gauss(61.7 if cut != "Fair" else 64.0, 1.2), 1)
        table = round(rng.gauss(57.5 if cut != "Ideal" else 56.0, 2.0), 0)
        log_price = 8.45 + 1.75 * math.log(carat) + cuts[cut] + colors[color] + clarities[clarity]
        log_price -= 0.04 * abs(depth - 61.7)  # badly proportioned stones sell for less
        price = round(math.exp(log_price + rng.gauss(0, 0.12)))
        row = [carat, cut, color, clarity, depth, int(table), price]
        if rng.random() < 0.015:
            row[rng.choice([2, 4, 5])] = "NA"  # a missing colour, depth or table
        out.append(row)
    return ["carat", "cut", "color", "clarity", "depth", "table", "price"], out


def write(name, header, rows):
    ROOT.mkdir(exist_ok=True)
    with open(ROOT / name, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


if __name__ == "__main__":
    write("housing.csv", *housing(random.Random(1)))
    write("penguins.csv", *penguins(random.Random(2)))
    write("titanic.csv", *titanic(random.Random(3)))
    write("diamonds.csv", *diamonds(random.Random(4)))
