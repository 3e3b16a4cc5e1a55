#!/usr/bin/env python3
"""Makes the bundled recommendation dataset (prompt-completion JSONL) and the short pretraining
text the demo's base model learns first. Deterministic; our own words. Run from the repo root:
python3 examples/youtube-recs/make_data.py"""
import json
import os
import random

INTERESTS = {
    "cooking": ["Pasta Tutorial", "Knife Skills 101", "Easy Bread at Home"],
    "baking": ["Sourdough Starter Guide", "Perfect Chocolate Cake", "Croissants Step by Step"],
    "gardening": ["Tomatoes in Pots", "Composting Basics", "Balcony Herb Garden"],
    "fitness": ["Morning Stretch Routine", "Home Workout No Gear", "Beginner Running Plan"],
    "yoga": ["Yoga for Back Pain", "Ten Minute Flow", "Breathing for Calm"],
    "travel": ["Tokyo on a Budget", "Packing Light", "Hidden Beaches of Portugal"],
    "photography": ["Golden Hour Portraits", "Phone Photo Tricks", "Editing in Ten Steps"],
    "programming": ["Learn C# in an Hour", "Git Explained", "Writing Clean Functions"],
    "machine learning": ["Neural Networks from Scratch", "What is LoRA", "Gradient Descent Visualized"],
    "history": ["The Roman Roads", "Life in a Medieval Town", "How the Printing Press Spread"],
    "science": ["Why the Sky is Blue", "Atoms in Five Minutes", "The Water Cycle"],
    "space": ["Journey to Mars", "How Rockets Land", "Black Holes Simply"],
    "music theory": ["Chords for Beginners", "Reading Sheet Music", "Rhythm Made Easy"],
    "guitar": ["First Three Guitar Chords", "Fingerpicking Basics", "Tuning by Ear"],
    "piano": ["Piano Scales Daily", "Play Your First Song", "Left Hand Patterns"],
    "chess": ["Opening Principles", "Endgame Essentials", "Tactics Puzzle Hour"],
    "board games": ["Top Family Games", "How to Teach Any Game", "Strategy Game Night"],
    "video games": ["Speedrun Secrets", "Retro Console Tour", "Indie Gems of the Year"],
    "movies": ["Film Editing Explained", "Best Scenes Breakdown", "How Sound Shapes a Film"],
    "drawing": ["Sketching Faces", "Perspective in Ten Minutes", "Ink Shading Tricks"],
    "painting": ["Watercolor Skies", "Acrylic Basics", "Color Mixing Guide"],
    "woodworking": ["Build a Simple Shelf", "Choosing Wood", "Hand Tool Care"],
    "cars": ["Change Your Own Oil", "How Engines Work", "Electric Car Basics"],
    "cycling": ["Fix a Flat Tire", "Climbing Hills Faster", "Bike Commuting Tips"],
    "hiking": ["Pack for a Day Hike", "Reading Trail Maps", "Mountain Safety"],
    "camping": ["Pitch a Tent Fast", "Campfire Cooking", "Sleeping Warm Outdoors"],
    "pets": ["Train Your Puppy", "Cat Care Basics", "Healthy Pet Food"],
    "languages": ["Spanish in Thirty Days", "Memorize Words Faster", "French Pronunciation"],
    "personal finance": ["Budgeting Made Simple", "Saving for Beginners", "Index Funds Explained"],
    "productivity": ["Plan Your Week", "Deep Work Habits", "Inbox Zero Method"],
    "meditation": ["Five Minute Meditation", "Mindful Walking", "Sleep Meditation"],
    "fashion": ["Capsule Wardrobe", "Thrift Store Finds", "Sewing a Button"],
    "home repair": ["Fix a Leaky Tap", "Patch a Wall", "Basic Electrical Safety"],
    "comedy": ["Stand Up Best Moments", "Sketch Comedy Classics", "Improv Games"],
    "news": ["World Week in Review", "Science News Today", "Tech Headlines"],
    "architecture": ["Famous Bridges", "Tiny Houses Tour", "How Skyscrapers Stand"],
    "robotics": ["Build a Line Follower", "Servo Motors Explained", "Robot Arms at Work"],
    "astronomy": ["Stargazing for Beginners", "Planets Tonight", "Telescope Buying Guide"],
    "soccer": ["Dribbling Drills", "Best Goals of the Season", "Soccer Tactics Explained"],
    "basketball": ["Shooting Form Fixes", "Passing Drills", "Great Comebacks"],
}

# Every phrasing of an interest gets that interest's top title, so a held-out phrasing is
# predictable from the others; "watched X" gets the next title in the interest's list.
TEMPLATES = [
    "User likes {x} videos.",
    "User often watches {x} content.",
    "User enjoys {x}.",
    "User is interested in {x}.",
    "User is a fan of {x}.",
    "User searches for {x} videos.",
]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    rows = []
    for interest, titles in INTERESTS.items():
        for template in TEMPLATES:
            rows.append({"prompt": template.format(x=interest) + "\nRecommendation:",
                         "completion": f" I recommend '{titles[0]}'"})
        for k in range(3):
            rows.append({"prompt": f"User watched '{titles[k]}' and likes {interest}.\nRecommendation:",
                         "completion": f" I recommend '{titles[(k + 1) % 3]}'"})
    random.Random(0).shuffle(rows)
    with open(os.path.join(here, "train.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    sentences = []
    for interest, titles in INTERESTS.items():
        sentences.append(f"People who like {interest} videos often watch '{titles[0]}', '{titles[1]}' and '{titles[2]}'.")
        sentences.append(f"A good video about {interest} is '{titles[random.Random(interest).randrange(3)]}'.")
        sentences.append(f"The user enjoys {interest}, so we recommend something new about {interest}.")
    random.Random(1).shuffle(sentences)
    with open(os.path.join(here, "pretrain.txt"), "w") as f:
        f.write("\n".join(sentences) + "\n")
    print(len(rows), "examples,", len(sentences), "pretraining sentences")


if __name__ == "__main__":
    main()
