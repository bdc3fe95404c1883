"""Write the small dialogue-summary sample shipped with qlora-sweep (trainables/samples/).

Original text, generated from templates written for this project (no DialogSum text; DialogSum's
licence forbids copying it here). Deterministic: rerunning writes the same files.

    python scripts/make_sample_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemi", "Liam",
         "Maya", "Nils", "Olga", "Pedro", "Quinn", "Rosa", "Sami", "Tara"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["9 am", "10 am", "noon", "2 pm", "4 pm", "6 pm", "7 pm", "8 pm"]
FOODS = ["pizza", "sushi", "curry", "pasta", "tacos", "salad", "noodles", "soup"]
ITEMS = ["jacket", "lamp", "phone case", "pair of boots", "backpack", "kettle", "desk chair", "watch"]
PROBLEMS = ["is the wrong size", "arrived broken", "stopped working", "is the wrong colour"]
CITIES = ["Lisbon", "Oslo", "Kyoto", "Lima", "Cairo", "Dublin", "Hanoi", "Quebec"]
TRANSPORT = ["train", "bus", "plane", "ferry"]
SUBJECTS = ["chemistry", "history", "statistics", "French", "economics", "biology"]
PETS = ["dog", "cat", "rabbit", "parrot"]


def restaurant(r: random.Random) -> tuple[str, str, str]:
    n, day, time, food = r.randint(2, 8), r.choice(DAYS), r.choice(TIMES), r.choice(FOODS)
    window = r.random() < 0.5
    lines = [
        f"#Person1#: Good evening, how can I help you?",
        f"#Person2#: I'd like to book a table for {n} people on {day}.",
        f"#Person1#: Certainly. What time would you like?",
        f"#Person2#: Around {time}, if possible.",
        f"#Person1#: That works. Any preferences?",
        f"#Person2#: " + ("A table by the window, please." if window else "No, anywhere is fine."),
        f"#Person1#: Noted. Our special that day is {food}.",
        f"#Person2#: Great, thank you.",
    ]
    summary = f"#Person2# books a table for {n} on {day} at {time}" + (" by the window" if window else "") + "."
    return "\n".join(lines), summary, "restaurant booking"


def product_return(r: random.Random) -> tuple[str, str, str]:
    item, problem, days = r.choice(ITEMS), r.choice(PROBLEMS), r.randint(2, 20)
    refund = r.random() < 0.5
    lines = [
        f"#Person1#: Hello, customer service. What can I do for you?",
        f"#Person2#: I bought a {item} {days} days ago and it {problem}.",
        f"#Person1#: I'm sorry to hear that. Do you have the receipt?",
        f"#Person2#: Yes, I have it here.",
        f"#Person1#: Would you like a refund or an exchange?",
        f"#Person2#: " + ("A refund, please." if refund else "I'd rather exchange it."),
        f"#Person1#: No problem, I'll arrange that now.",
    ]
    outcome = "gets a refund" if refund else "exchanges it"
    summary = f"#Person2#'s {item} {problem}, so #Person2# {outcome}."
    return "\n".join(lines), summary, "product return"


def doctor(r: random.Random) -> tuple[str, str, str]:
    day, time = r.choice(DAYS), r.choice(TIMES)
    symptom = r.choice(["a sore throat", "a headache", "back pain", "a cough", "a fever"])
    weeks = r.randint(1, 3)
    lines = [
        f"#Person1#: Doctor's office, how can I help?",
        f"#Person2#: I've had {symptom} for {weeks} week{'s' if weeks > 1 else ''} and would like to see a doctor.",
        f"#Person1#: We have an opening on {day} at {time}. Does that suit you?",
        f"#Person2#: Yes, that's fine.",
        f"#Person1#: Please bring your insurance card.",
        f"#Person2#: I will. Thanks.",
    ]
    summary = f"#Person2# has had {symptom} and makes a doctor's appointment for {day} at {time}."
    return "\n".join(lines), summary, "doctor appointment"


def trip(r: random.Random) -> tuple[str, str, str]:
    a, b = r.sample(NAMES, 2)
    city, transport, nights = r.choice(CITIES), r.choice(TRANSPORT), r.randint(2, 7)
    lines = [
        f"#Person1#: {b}, have you decided where to go on holiday?",
        f"#Person2#: I'm thinking about {city}. I've never been there.",
        f"#Person1#: How will you get there?",
        f"#Person2#: By {transport}. It's cheaper than I expected.",
        f"#Person1#: How long will you stay?",
        f"#Person2#: {nights} nights. I booked a small hotel near the centre.",
        f"#Person1#: Sounds lovely. Send me photos!",
    ]
    summary = f"{b} is going to {city} by {transport} for {nights} nights and has booked a hotel near the centre."
    return "\n".join(lines), summary, "travel"


def study(r: random.Random) -> tuple[str, str, str]:
    a, b = r.sample(NAMES, 2)
    subject, day, hours = r.choice(SUBJECTS), r.choice(DAYS), r.randint(1, 4)
    lines = [
        f"#Person1#: {b}, are you ready for the {subject} exam?",
        f"#Person2#: Not really. I still don't understand the last chapter.",
        f"#Person1#: Why don't we study together on {day}?",
        f"#Person2#: That would help a lot. For how long?",
        f"#Person1#: Maybe {hours} hour{'s' if hours > 1 else ''} in the library.",
        f"#Person2#: Deal. I'll bring my notes.",
    ]
    summary = f"#Person1# and {b} will study {subject} together in the library on {day} for {hours} hour{'s' if hours > 1 else ''}."
    return "\n".join(lines), summary, "study"


def pet_sitting(r: random.Random) -> tuple[str, str, str]:
    a, b = r.sample(NAMES, 2)
    pet, days, day = r.choice(PETS), r.randint(2, 10), r.choice(DAYS)
    lines = [
        f"#Person1#: {b}, could you do me a favour?",
        f"#Person2#: Sure, what is it?",
        f"#Person1#: I'm away for {days} days from {day}. Could you look after my {pet}?",
        f"#Person2#: Of course. What does it eat?",
        f"#Person1#: I'll leave the food and instructions on the kitchen table.",
        f"#Person2#: No problem. Have a good trip.",
    ]
    summary = f"{b} agrees to look after #Person1#'s {pet} for {days} days from {day}."
    return "\n".join(lines), summary, "favour"


def food_order(r: random.Random) -> tuple[str, str, str]:
    food, n, minutes = r.choice(FOODS), r.randint(1, 4), r.choice([20, 30, 40, 45])
    cash = r.random() < 0.5
    lines = [
        f"#Person1#: Thanks for calling. What would you like to order?",
        f"#Person2#: {n} portion{'s' if n > 1 else ''} of {food}, please.",
        f"#Person1#: Anything to drink?",
        f"#Person2#: No, thanks. How long will it take?",
        f"#Person1#: About {minutes} minutes. How will you pay?",
        f"#Person2#: " + ("Cash on delivery." if cash else "By card."),
    ]
    pay = "cash" if cash else "card"
    summary = f"#Person2# orders {n} portion{'s' if n > 1 else ''} of {food}, paying by {pay}; delivery takes about {minutes} minutes."
    return "\n".join(lines), summary, "food order"


SCENARIOS = [restaurant, product_return, doctor, trip, study, pet_sitting, food_order]


def make_rows(count: int, seed: int, prefix: str) -> list[dict[str, str]]:
    r = random.Random(seed)
    rows = []
    for i in range(count):
        dialogue, summary, topic = r.choice(SCENARIOS)(r)
        rows.append({"id": f"{prefix}_{i}", "dialogue": dialogue, "summary": summary, "topic": topic})
    return rows


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "trainables" / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", 240, 1), ("validation", 40, 2)):
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in make_rows(count, seed, split):
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
