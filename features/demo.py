"""A synthetic data set in the exact official SMPD file layout (the built-in demo).

It lets the whole pipeline run, and be tested, without the real 36 GB download.
The generative model mirrors what is known to drive popularity on Flickr, so that
every feature family has something real-looking to find, and nothing more:

- users: heavy-tailed activity (log-normal post counts: a few users post a lot), a
  latent user popularity (the largest effect), partly visible through `ispro`,
  `photo_count` and account age; habits (camera and city tags, Instagram uploads
  with square images, empty titles, geotagging, posting hour);
- content: category > subcategory > concept, each with its own effect; titles and
  tags drawn from per-subcategory vocabularies plus shared tags, some of which carry
  popularity (`explore`, camera brands) or the lack of it (app-upload tags);
- time: local hour and weekday effects and a downward drift over the 16 months, so
  the test period (after the train period) has a lower mean, as in SMPD;
- image: a latent visual quality per post (colourful, bright, sharp, many shapes
  against dull, blurred, noisy) adds to the label, and the subcategory sets the
  palette and the shapes, so an image model can tell categories apart.

The label is log-popularity calibrated to the real train distribution (mean 6.41,
std 2.47, clipped to [1, 16.56], two decimals). Test labels go to a file outside
the data folder so that a run can be scored but cannot read them.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter
from tqdm import tqdm

from common.io import atomic_path
from features.smpd import JSON_FILES, SPLITS, official_file_names

# Fields of each official JSON file, in the order the real files list them (the reader's list).
JSON_FIELDS: dict[str, list[str]] = {kind: ["Uid", "Pid", *fields] for kind, fields in JSON_FILES.items()}


def split_file_names(split: str) -> list[str]:
    """Names of the data files of one split in the official layout (images aside)."""
    return list(official_file_names(split).values())


# --- taxonomy: the official 11 categories (typos included), 77 subcategories ---------------
# Subcategories named in the SMPD documentation are kept; the rest are plausible.
# Each subcategory lists its concepts, which also serve as its title and tag vocabulary.
TAXONOMY: dict[str, dict[str, str]] = {
    "Fashion": {
        "Fashion": "fashion style model dress runway vogue outfit designer streetstyle",
        "Makeup": "makeup lipstick eyeliner mascara eyeshadow contour beauty cosmetics",
        "Hair": "hair hairstyle haircut braid curls blonde balayage barber",
        "Nails": "nails manicure nailart nailpolish gelnails pedicure glitter",
        "Jewelry": "jewelry necklace ring bracelet gold silver diamond pendant",
        "Earrings": "earrings studs hoops pearl dangle handmade beads",
        "OOTD": "ootd outfitoftheday lookbook wiw streetwear denim sneakers shoes",
        "Guys,Fashion": "menswear suit dapper tie gentleman beard mensfashion blazer",
        "Tattoos": "tattoo ink tattooart sleeve tattooed blackwork tattooartist",
    },
    "Food": {
        "Dessert": "dessert cake cupcake chocolate icecream cookies pastry macarons",
        "Tea": "tea matcha teatime greentea teapot chai herbal",
        "Coffee": "coffee latte espresso cappuccino cafe latteart barista coffeeshop",
        "Drinks": "cocktail wine beer smoothie juice mojito bar whiskey",
        "Fruit": "fruit strawberry apples banana mango berries watermelon orange",
        "Cooking": "cooking dinner pasta recipe homemade kitchen pizza soup",
        "Breakfast": "breakfast pancakes brunch eggs toast avocado granola waffles",
        "Vegan": "vegan salad healthyfood plantbased vegetables tofu veggie",
    },
    "Whether&Season": {
        "Winter": "winter cold frost ice frozen winterwonderland icicles",
        "Raining": "rain raining raindrops umbrella storm wet puddle clouds",
        "Snowing": "snow snowing snowfall snowflake blizzard snowman snowy",
        "Spring": "spring blossom flowers cherryblossom tulips bloom green",
        "Summer": "summer sunshine sun heat summertime sunny pool",
        "Autumn": "autumn fall leaves foliage pumpkin fallcolors harvest",
        "Sunset": "sunset sunrise sky goldenhour dusk dawn horizon",
    },
    "Travel&Active&Sports": {
        "Gymnastics": "gymnastics gymnast flexibility balance acrobatics beam cheerleading",
        "Bodybuilding": "bodybuilding muscle gains bodybuilder biceps physique lifting",
        "Football": "football soccer goal stadium match premierleague fifa nfl",
        "Baseball": "baseball mlb pitcher homerun ballpark batter softball",
        "Health,Fitness": "fitness gym workout yoga training running healthy crossfit",
        "Hiking": "hiking mountains trail hike outdoors trekking adventure camping",
        "Cycling": "cycling bike bicycle mtb roadbike cyclist ride",
        "Surfing": "surfing surf waves surfer ocean surfboard swell",
        "Beach": "beach sea sand coast seaside island tropical palmtrees",
        "Skiing": "skiing ski snowboard slopes alps powder snowboarding",
    },
    "Social&People": {
        "Love": "love couple romance kiss heart together boyfriend girlfriend",
        "Selfies": "selfie me selfportrait face mirror smile pose",
        "Friends": "friends friendship bestfriends squad party fun crew",
        "Good,Morning": "goodmorning morning wakeup mondaymorning morningvibes riseandshine",
        "Good": "good goodvibes positive motivation quote inspiration happiness goodnight",
        "Guys": "guys guy man men boys handsome dude bro",
        "Smile": "smiles laugh happy joy cheerful grin funny",
    },
    "Holiday&Celebrations": {
        "Christmas": "christmas xmas christmastree santa ornaments presents merrychristmas advent",
        "Thanksgiving": "thanksgiving turkey thankful feast grateful pie gobble",
        "Halloween": "halloween costume spooky jackolantern witch trickortreat zombie",
        "Easter": "easter eastereggs bunny eastersunday chicks egghunt",
        "Wedding": "wedding bride groom weddingdress ceremony bridal engagement vows",
        "Birthday": "birthday birthdaycake candles celebration balloons happybirthday gifts",
        "Valentines": "valentinesday valentine roses cupid chocolates hearts datenight",
    },
    "Entertainment": {
        "Movies": "movies film cinema movie starwars actor hollywood premiere",
        "Music": "music guitar piano musician singer band song vinyl",
        "Books": "books reading library bookstagram novel bookshelf author literature",
        "Art": "art painting drawing sketch illustration artist watercolor canvas",
        "Games": "gaming videogames playstation xbox nintendo boardgames gamer",
        "Anime": "anime manga cosplay otaku kawaii animeart comics",
        "Dance": "dance ballet dancer dancing hiphop salsa choreography",
        "Concert": "concert livemusic festival gig stage crowd rock",
    },
    "Family": {
        "Babies": "baby newborn babies infant toddler babyboy babygirl cutebaby",
        "Kids": "kids children child playground school playing childhood",
        "Mom": "mom mother mothersday motherhood mommy mum",
        "Dad": "dad father fathersday fatherhood daddy papa",
        "Pregnancy": "pregnancy pregnant maternity babybump expecting bump",
    },
    "Urban": {
        "StreetArt": "streetart graffiti mural urbanart stencil wallart spraypaint",
        "Architecture": "architecture building skyscraper cathedral facade interior modern",
        "Cars": "cars car porsche ferrari classiccar carporn supercar bmw",
        "City": "city cityscape skyline urban downtown street metro",
        "Night": "night nightlights longexposure neon nightsky citylights nightlife",
        "Bridges": "bridge bridges river goldengate suspension arches",
    },
    "Animal": {
        "Insects": "insects butterfly bee dragonfly ladybug spider beetle moth",
        "Fish": "fish aquarium underwater coral goldfish koi fishing",
        "Cats": "cat cats kitten kitty catsofinstagram meow feline",
        "Dogs": "dog dogs puppy doggy pup labrador dogsofinstagram",
        "Birds": "birds bird birding eagle owl parrot seagull wildlife",
        "Horses": "horse horses equestrian pony horseriding stallion",
        "Pets": "pets pet rabbit hamster petsofinstagram guineapig turtle",
    },
    "Electronics": {
        "Electronics": "electronics arduino circuit robot tech diy raspberrypi",
        "Phones": "iphone smartphone android samsung phone apple mobile",
        "Gadgets": "gadgets headphones laptop camera drone smartwatch gopro",
    },
}
# How often each category occurs (SMPD is dominated by travel/sports, holidays and fashion).
CATEGORY_WEIGHTS = {
    "Travel&Active&Sports": 0.20, "Holiday&Celebrations": 0.13, "Fashion": 0.12, "Whether&Season": 0.10,
    "Social&People": 0.09, "Entertainment": 0.09, "Food": 0.08, "Urban": 0.07, "Animal": 0.06,
    "Family": 0.04, "Electronics": 0.02,
}

# Tags many users add whatever the subject, with their effect on popularity: Flickr's
# Explore and camera tags go with more views, app-upload tags with fewer.
SHARED_TAGS = {
    "explore": 0.8, "nikon": 0.25, "canon": 0.25, "sony": 0.15, "fujifilm": 0.2, "500px": 0.3,
    "landscape": 0.2, "nature": 0.15, "photography": 0.1, "bokeh": 0.2, "macro": 0.2, "hdr": 0.1,
    "bw": 0.1, "blackandwhite": 0.1, "50mm": 0.2, "travel": 0.1, "light": 0.05, "color": 0.05,
    "beautiful": 0.0, "2015": 0.0, "2016": 0.0, "flickr": 0.0, "cute": 0.0, "life": -0.05,
    "photooftheday": -0.1, "instagood": -0.2, "follow": -0.25, "like4like": -0.3, "vsco": -0.1,
}
# Tags an Instagram upload to Flickr carries (the filter name is added separately).
APP_TAGS = ["instagramapp", "square", "squareformat", "iphoneography", "uploaded:by=instagram"]
APP_TAG_EFFECT = -0.08  # per app tag; the app-user habit itself is in the user effect
APP_FILTERS = ["clarendon", "juno", "lark", "valencia", "ludwig", "gingham", "normal", "amaro"]
CAMERAS = ["nikond750", "nikond7100", "canon5dmarkiii", "canon70d", "sonya7ii", "fujixt1", "olympusem5",
           "iphone6", "iphone6s", "galaxys6", "gopro", "leica"]
GENERIC_TITLE_WORDS = ["my", "the", "a", "new", "day", "first", "beautiful", "today", "with", "at", "of",
                       "little", "best", "last", "weekend", "time", "our", "old", "in", "and", "café",
                       "noël", "été", "moments", "view", "happy"]
# (offset, timezone id, [(city, country, latitude, longitude), ...]) with a share of users
TIMEZONES = [
    ("-08:00", "PST8PDT", [("San Francisco", "USA", 37.77, -122.42), ("Los Angeles", "USA", 34.05, -118.24),
                           ("Seattle", "USA", 47.61, -122.33)], 0.13),
    ("-05:00", "America/New_York", [("New York", "USA", 40.71, -74.00), ("Boston", "USA", 42.36, -71.06),
                                    ("Toronto", "Canada", 43.65, -79.38)], 0.16),
    ("-06:00", "America/Chicago", [("Chicago", "USA", 41.88, -87.63), ("Austin", "USA", 30.27, -97.74)], 0.07),
    ("-03:00", "America/Sao_Paulo", [("Sao Paulo", "Brazil", -23.55, -46.63),
                                     ("Buenos Aires", "Argentina", -34.60, -58.38)], 0.04),
    ("+00:00", "Europe/London", [("London", "UK", 51.51, -0.13), ("Manchester", "UK", 53.48, -2.24),
                                 ("Dublin", "Ireland", 53.35, -6.26)], 0.12),
    ("+01:00", "Europe/Paris", [("Paris", "France", 48.86, 2.35), ("Berlin", "Germany", 52.52, 13.40),
                                ("Madrid", "Spain", 40.42, -3.70), ("Rome", "Italy", 41.90, 12.50),
                                ("Amsterdam", "Netherlands", 52.37, 4.90)], 0.20),
    ("+02:00", "Europe/Athens", [("Athens", "Greece", 37.98, 23.73), ("Helsinki", "Finland", 60.17, 24.94)], 0.03),
    ("+03:00", "Europe/Moscow", [("Moscow", "Russia", 55.76, 37.62)], 0.03),
    ("+05:30", "Asia/Kolkata", [("Mumbai", "India", 19.08, 72.88), ("Delhi", "India", 28.61, 77.21)], 0.04),
    ("+08:00", "Asia/Shanghai", [("Shanghai", "China", 31.23, 121.47), ("Beijing", "China", 39.90, 116.40),
                                 ("Singapore", "Singapore", 1.35, 103.82), ("Taipei", "Taiwan", 25.03, 121.57)], 0.09),
    ("+09:00", "Asia/Tokyo", [("Tokyo", "Japan", 35.68, 139.69), ("Seoul", "South Korea", 37.57, 126.98)], 0.05),
    ("+10:00", "Australia/Sydney", [("Sydney", "Australia", -33.87, 151.21),
                                    ("Melbourne", "Australia", -37.81, 144.96)], 0.04),
]
HOBBIES = ["travel", "street photography", "landscapes", "my dog", "food", "fashion", "music", "hiking",
           "architecture", "birds", "my kids", "coffee", "cycling", "art", "macro"]
ALIAS_WORDS = ["photo", "lens", "pixel", "shots", "studio", "eye", "wander", "light", "frames", "snap"]

START = int(datetime(2015, 11, 1, tzinfo=timezone.utc).timestamp())  # SMPD posts span about 16 months
SPAN_S = 486 * 86400
TRAIN_SHARE_OF_TIME = 0.63  # train period first, test period after it (as 305k:181k posts)
LABEL_MEAN, LABEL_STD, LABEL_MIN, LABEL_MAX = 6.41, 2.47, 1.0, 16.56  # real train label statistics
WEEKDAY_EFFECT = np.array([0.05, 0.08, 0.06, 0.04, -0.02, -0.13, -0.08])  # Monday first, local time
SKEW = 0.06
DRIFT = 2.1  # raw units lost over the 16 months (views per day fall as the crawl date nears)
MISSING_IMAGE_SHARE = 0.005  # real sets list a few images that are not there...
UNREADABLE_IMAGE_SHARE = 0.002  # ...or do not decode


def _check_taxonomy() -> None:
    concepts = [c for subs in TAXONOMY.values() for words in subs.values() for c in words.split()]
    n_sub = sum(len(subs) for subs in TAXONOMY.values())
    if len(TAXONOMY) != 11 or n_sub != 77 or len(set(concepts)) != len(concepts):
        raise AssertionError(f"demo taxonomy: {len(TAXONOMY)} categories, {n_sub} subcategories, "
                             f"{len(concepts) - len(set(concepts))} repeated concepts (want 11, 77, 0)")


_check_taxonomy()


@dataclass
class _Taxonomy:
    categories: list[str]
    subcategories: list[str]
    sub_category: np.ndarray  # subcategory -> category index
    sub_concepts: list[list[int]]  # subcategory -> its concept indices
    concepts: list[str]
    concept_sub: np.ndarray


def _taxonomy() -> _Taxonomy:
    categories, subcategories, sub_category, sub_concepts, concepts, concept_sub = [], [], [], [], [], []
    for ci, (category, subs) in enumerate(TAXONOMY.items()):
        categories.append(category)
        for sub, words in subs.items():
            si = len(subcategories)
            subcategories.append(sub)
            sub_category.append(ci)
            sub_concepts.append([])
            for word in words.split():
                sub_concepts[si].append(len(concepts))
                concepts.append(word)
                concept_sub.append(si)
    return _Taxonomy(categories, subcategories, np.array(sub_category), sub_concepts, concepts, np.array(concept_sub))


def _phi(x: np.ndarray | float) -> np.ndarray:
    """Standard normal CDF."""
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(x) / math.sqrt(2.0)))


def _format_time(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# --- users ---------------------------------------------------------------------------------
def _make_users(rng: np.random.Generator, n_users: int, tax: _Taxonomy) -> dict:
    activity_z = rng.normal(0.0, 1.0, n_users)
    activity = np.exp(1.3 * activity_z)  # log-normal post counts: heavy tail of very active users
    # who posts when: users of both periods, users who stopped, new users (test only)
    group = rng.choice(3, size=n_users, p=[0.55, 0.25, 0.20])  # 0 both, 1 train only, 2 test only
    group[np.argsort(-activity)[:max(1, n_users // 50)]] = 0  # the most active ones post throughout
    # latent popularity: mildly higher for active users, lower for new accounts
    skill = 0.3 * activity_z + 0.95 * rng.normal(0.0, 1.0, n_users) - 0.3 * (group == 2)
    ispro = (rng.random(n_users) < 1.0 / (1.0 + np.exp(1.3 - 1.2 * skill))).astype(int)
    canbuypro = np.where(ispro == 1, 0, (rng.random(n_users) < 0.85).astype(int))
    photo_count = np.floor(np.exp(6.0 + 0.7 * activity_z + 0.4 * skill + rng.normal(0.0, 1.1, n_users))).astype(int) + 1
    # account creation: 2004..2015, older accounts a little more popular; new users joined late
    first_year = np.clip(2010.0 - 1.2 * skill + rng.normal(0.0, 2.5, n_users), 2004.2, 2015.8)
    first_year = np.where(group == 2, rng.uniform(2015.0, 2016.3, n_users), first_year)
    photo_firstdate = (datetime(2004, 1, 1, tzinfo=timezone.utc).timestamp()
                       + (first_year - 2004.0) * 365.25 * 86400).astype(np.int64)
    taken_back = rng.exponential(3.0, n_users) * 365.25 * 86400  # first photo taken before the upload
    photo_firstdatetaken = photo_firstdate - taken_back.astype(np.int64)

    tz_weights = np.array([t[3] for t in TIMEZONES])
    tz_index = rng.choice(len(TIMEZONES), size=n_users, p=tz_weights / tz_weights.sum())
    city_index = np.array([rng.integers(len(TIMEZONES[t][2])) for t in tz_index])
    tz_missing = rng.random(n_users) < 0.05
    # each user sticks to a few categories; over all users the shares follow CATEGORY_WEIGHTS
    overall = np.array([CATEGORY_WEIGHTS[c] for c in tax.categories])
    category_pref = 0.85 * rng.dirichlet(4.0 * overall, size=n_users) + 0.15 * overall
    app_user = rng.random(n_users) < 0.25  # uploads from Instagram: square images, app tags
    skill = skill - 0.4 * app_user

    uids, seen = [], set()
    while len(uids) < n_users:
        uid = f"{int(rng.integers(1, 160000))}@N{int(rng.integers(0, 100)):02d}"
        if uid not in seen:
            seen.add(uid)
            uids.append(uid)
    aliases, descriptions, locations, habit_tags = [], [], [], []
    for i in range(n_users):
        _, _, cities, _ = TIMEZONES[tz_index[i]]
        city, country, _, _ = cities[city_index[i]]
        alias = f"{ALIAS_WORDS[rng.integers(len(ALIAS_WORDS))]}{uids[i].split('@')[0]}"
        aliases.append("None" if rng.random() < 0.3 else alias)
        camera = CAMERAS[rng.integers(len(CAMERAS))]
        if rng.random() < 0.45:
            descriptions.append("")
        else:
            hobby_a, hobby_b = rng.choice(len(HOBBIES), size=2, replace=False)
            templates = [f"Amateur photographer from {city}.",
                         f"I love {HOBBIES[hobby_a]} and {HOBBIES[hobby_b]}.",
                         f"Shooting with a {camera}. Mostly {HOBBIES[hobby_a]}.",
                         f"{country}. {HOBBIES[hobby_a].capitalize()}, {HOBBIES[hobby_b]}. Follow me @{alias}",
                         f"Professional photographer based in {city}, {country}. Available for hire."]
            descriptions.append(templates[rng.integers(len(templates))])
        locations.append("" if rng.random() < 0.35 else (f"{city}, {country}" if rng.random() < 0.7 else country))
        tags = []
        if rng.random() < 0.5:
            tags.append(camera)
        if rng.random() < 0.3:
            tags.append(city.lower().replace(" ", ""))
        habit_tags.append(tags)
    return {
        "uid": uids, "activity": activity, "group": group, "skill": skill, "ispro": ispro, "canbuypro": canbuypro,
        "photo_count": photo_count, "photo_firstdate": photo_firstdate, "photo_firstdatetaken": photo_firstdatetaken,
        "tz_index": tz_index, "city_index": city_index, "tz_missing": tz_missing, "category_pref": category_pref,
        "app_user": app_user, "alias": aliases, "description": descriptions, "location": locations,
        "habit_tags": habit_tags,
        "visual_skill": 0.5 * skill + rng.normal(0.0, 0.85, n_users),
        "peak_hour": rng.normal(17.0, 4.0, n_users) % 24,
        "title_empty_rate": rng.beta(1.0, 4.0, n_users),
        "tags_empty_rate": rng.beta(0.6, 5.0, n_users),
        "filename_title_rate": rng.beta(0.5, 6.0, n_users),
        "geo_rate": rng.beta(0.7, 1.0, n_users),
        "n_tags_mean": rng.gamma(2.0, 3.0, n_users),
        "firstdatetaken_empty": rng.random(n_users) < 0.03,
    }


# --- posts ---------------------------------------------------------------------------------
def _make_posts(rng: np.random.Generator, users: dict, tax: _Taxonomy, n_train: int, n_test: int) -> dict:
    n = n_train + n_test
    split = np.array([0] * n_train + [1] * n_test)
    split_time = START + int(TRAIN_SHARE_OF_TIME * SPAN_S)
    user = np.empty(n, dtype=np.int64)
    for s, allowed_group in ((0, 1), (1, 2)):
        weights = users["activity"] * np.isin(users["group"], [0, allowed_group])
        user[split == s] = rng.choice(len(weights), size=int((split == s).sum()), p=weights / weights.sum())

    # time: a day in the split's period, an hour of the day around the user's habit (local time)
    offset_h = np.array([_offset_hours(TIMEZONES[t][0]) for t in users["tz_index"]])[user]
    lo = np.where(split == 0, START, split_time)
    hi = np.where(split == 0, split_time - 1, START + SPAN_S)
    local = rng.uniform(lo, hi) + offset_h * 3600
    hour = np.where(rng.random(n) < 0.7, users["peak_hour"][user] + rng.normal(0.0, 3.0, n), rng.uniform(0, 24, n)) % 24
    local = np.floor(local / 86400) * 86400 + hour * 3600
    postdate = np.clip(local - offset_h * 3600, lo, hi).astype(np.int64)
    local = postdate + offset_h * 3600
    local_hour = (local % 86400) // 3600
    weekday = ((local // 86400).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday

    # content: category from the user's taste, subcategory and concept within it
    cum = users["category_pref"][user].cumsum(axis=1)
    category = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), len(tax.categories) - 1)
    subcategory = np.empty(n, dtype=np.int64)
    concept = np.empty(n, dtype=np.int64)
    for i in range(n):
        subs = np.flatnonzero(tax.sub_category == category[i])
        if rng.random() < 0.5:  # half the time one of the category's main subcategories
            subcategory[i] = subs[min(int(rng.zipf(1.6)) - 1, len(subs) - 1)]
        else:
            subcategory[i] = subs[rng.integers(len(subs))]
        options = tax.sub_concepts[subcategory[i]]
        concept[i] = options[min(int(rng.zipf(1.4)) - 1, len(options) - 1)]
    video = rng.random(n) < 0.02
    has_geo = rng.random(n) < users["geo_rate"][user]
    visual = 0.5 * users["visual_skill"][user] + 0.85 * rng.normal(0.0, 1.0, n)

    titles, tags, lat, lon, geoacc = [], [], [], [], []
    title_kind = np.zeros(n, dtype=np.int64)  # 0 empty, 1 camera file name, 2 words
    tag_effect = np.zeros(n)
    shared = list(SHARED_TAGS)
    for i in range(n):
        u = user[i]
        vocab = [tax.concepts[c] for c in tax.sub_concepts[subcategory[i]]]
        # title: empty, a camera file name, or words of the subject
        r = rng.random()
        if r < users["title_empty_rate"][u]:
            titles.append("")
        elif r < users["title_empty_rate"][u] + users["filename_title_rate"][u]:
            titles.append(f"{['IMG', 'DSC'][rng.integers(2)]}_{rng.integers(1, 9999):04d}")
            title_kind[i] = 1
        else:
            title_kind[i] = 2
            words = [tax.concepts[concept[i]] if rng.random() < 0.6 else vocab[rng.integers(len(vocab))]]
            for _ in range(int(rng.integers(0, 4))):
                pool = vocab if rng.random() < 0.5 else GENERIC_TITLE_WORDS
                words.append(pool[rng.integers(len(pool))])
            rng.shuffle(words)
            title = " ".join(words)
            titles.append(title.capitalize() if rng.random() < 0.6 else title)
        # tags: subject words, shared tags, the user's habits, Instagram's tags
        post_tags: list[str] = []
        if rng.random() >= users["tags_empty_rate"][u]:
            k = int(rng.poisson(users["n_tags_mean"][u]))
            if rng.random() < 0.75:
                post_tags.append(tax.concepts[concept[i]])
            post_tags += [vocab[j] for j in rng.choice(len(vocab), size=min(len(vocab), k // 2), replace=False)]
            post_tags += [shared[j] for j in rng.choice(len(shared), size=min(len(shared), k - k // 2), replace=False)
                          if rng.random() < 0.4]
            post_tags += users["habit_tags"][u]
            if users["app_user"][u]:
                post_tags += APP_TAGS + [APP_FILTERS[rng.integers(len(APP_FILTERS))]]
            if rng.random() < 0.02 + 0.04 * (users["skill"][u] > 1.0):
                post_tags.append("explore")
            post_tags = list(dict.fromkeys(post_tags))  # Flickr keeps each tag once
        tags.append(" ".join(post_tags))
        tag_effect[i] = (sum(SHARED_TAGS.get(t, 0.0) for t in post_tags)
                         + APP_TAG_EFFECT * sum(t in APP_TAGS for t in post_tags) + 0.3 * math.log1p(len(post_tags)))
        # geo: near the user's city, now and then a trip
        if has_geo[i]:
            tz = TIMEZONES[users["tz_index"][u]]
            if rng.random() < 0.85:
                _, _, la, lo_ = tz[2][users["city_index"][u]]
            else:
                other = TIMEZONES[rng.integers(len(TIMEZONES))][2]
                _, _, la, lo_ = other[rng.integers(len(other))]
            lat.append(f"{la + rng.normal(0, 0.05):.6f}")
            lon.append(f"{lo_ + rng.normal(0, 0.05):.6f}")
            geoacc.append(str([16, 16, 16, 15, 14, 13, 11, 6, 3][rng.integers(9)]))
        else:
            lat.append("")
            lon.append("")
            geoacc.append("0" if rng.random() < 0.8 else "")
    return {
        "split": split, "user": user, "postdate": postdate, "local_hour": local_hour, "weekday": weekday,
        "category": category, "subcategory": subcategory, "concept": concept, "video": video,
        "has_geo": has_geo, "visual": visual, "title": titles, "title_kind": title_kind, "tags": tags,
        "tag_effect": tag_effect, "lat": lat, "lon": lon, "geoacc": geoacc,
    }


def _offset_hours(offset: str) -> float:
    sign = -1.0 if offset.startswith("-") else 1.0
    hours, minutes = offset[1:].split(":")
    return sign * (int(hours) + int(minutes) / 60.0)


def _labels(rng: np.random.Generator, users: dict, posts: dict, tax: _Taxonomy) -> np.ndarray:
    """Popularity: a sum of effects plus noise, calibrated to the real train distribution."""
    u = posts["user"]
    log_count = np.log(users["photo_count"])
    account_years = (START - users["photo_firstdate"]) / (365.25 * 86400)
    user_effect = (1.5 * users["skill"] + 0.35 * users["ispro"]
                   + 0.2 * (log_count - log_count.mean()) / log_count.std()
                   + 0.04 * np.clip(account_years, -1, 12))[u]
    category_effect = rng.normal(0.0, 0.4, len(tax.categories))
    sub_effect = rng.normal(0.0, 0.35, len(tax.subcategories))
    concept_effect = rng.normal(0.0, 0.2, len(tax.concepts))
    content = (category_effect[posts["category"]] + sub_effect[posts["subcategory"]]
               + concept_effect[posts["concept"]])
    when = (0.25 * np.cos(2 * np.pi * (posts["local_hour"] - 20) / 24) + WEEKDAY_EFFECT[posts["weekday"]]
            - DRIFT * ((posts["postdate"] - START) / SPAN_S) ** 1.2)
    titled = posts["title_kind"] == 2  # a real title, not empty nor a camera file name
    raw = (user_effect + content + when + posts["tag_effect"] + 0.25 * titled + 0.15 * posts["has_geo"]
           - 0.4 * posts["video"] + 0.55 * posts["visual"] + rng.normal(0.0, 1.0, len(u)))
    train = posts["split"] == 0
    z = (raw - raw[train].mean()) / raw[train].std()
    z = z + SKEW * (z ** 2 - 1)  # the real label has a longer right tail (quantiles 1%..99%: -2.2..+2.6 std)
    label = LABEL_MEAN + LABEL_STD * (z - z[train].mean()) / z[train].std()
    return np.round(np.clip(label, LABEL_MIN, LABEL_MAX), 2)


# --- images --------------------------------------------------------------------------------
def _styles(rng: np.random.Generator, tax: _Taxonomy) -> list[dict]:
    """Per subcategory: a palette (hue family from the category), a shape and a background kind."""
    styles = []
    for si, ci in enumerate(tax.sub_category):
        hue = (ci / len(tax.categories) + rng.uniform(-0.04, 0.04)) % 1.0
        colours = [_hsv_to_rgb(hue, 0.85, 0.95), _hsv_to_rgb((hue + rng.uniform(0.05, 0.15)) % 1.0, 0.7, 0.6),
                   _hsv_to_rgb((hue + 0.5) % 1.0, 0.8, 0.9)]
        styles.append({"colours": np.array(colours), "shape": int(si % 6), "background": int(ci % 3),
                       "n_shapes": int(rng.integers(1, 4))})
    return styles


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (255 * r, 255 * g, 255 * b)


def _render_image(style: dict, quality: float, width: int, height: int, rng: np.random.Generator) -> bytes:
    """A JPEG whose palette and shapes show the subcategory and whose look shows `quality` in (0, 1):
    high: colourful, bright, contrasted, sharp, busy; low: dull, dark, blurred, noisy."""
    c_bg, c_dark, c_accent = style["colours"]
    if style["background"] == 0:
        t = np.linspace(0, 1, height)[:, None, None] * np.ones((1, width, 1))
    elif style["background"] == 1:
        t = np.linspace(0, 1, width)[None, :, None] * np.ones((height, 1, 1))
    else:
        yy, xx = np.mgrid[0:height, 0:width]
        t = (np.hypot(yy - height / 2, xx - width / 2) / (0.71 * max(width, height)))[:, :, None]
    image = Image.fromarray((c_bg * (1 - t) + c_dark * t).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    size = min(width, height)
    for _ in range(style["n_shapes"] + int(round(4 * quality)) + int(rng.integers(0, 2))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.08, 0.25) * size
        colour = tuple(int(c) for c in (c_accent if rng.random() < 0.7 else 255 - c_dark))
        box = [cx - r, cy - r, cx + r, cy + r]
        kind = style["shape"]
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        elif kind == 2:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        elif kind == 3:
            draw.line([(cx - r, 0), (cx + r, height)], fill=colour, width=max(1, int(r / 3)))
        elif kind == 4:
            draw.ellipse(box, outline=colour, width=max(1, int(r / 4)))
        else:
            draw.line([(cx - r, cy), (cx + r, cy)], fill=colour, width=max(1, int(r / 3)))
            draw.line([(cx, cy - r), (cx, cy + r)], fill=colour, width=max(1, int(r / 3)))

    def jitter() -> float:
        return float(rng.normal(0.0, 0.08))

    image = ImageEnhance.Color(image).enhance(max(0.0, 0.1 + 1.1 * quality + jitter()))
    image = ImageEnhance.Brightness(image).enhance(0.5 + 0.65 * quality + jitter())
    image = ImageEnhance.Contrast(image).enhance(0.45 + 0.8 * quality + jitter())
    blur = (1.0 - quality) * 2.2 * size / 64
    if blur > 0.25:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 3.0 + 16.0 * (1.0 - quality), (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _image_shape(app_user: bool, image_size: int, r: float) -> tuple[int, int]:
    """Width and height: Instagram uploads are square, cameras mostly landscape."""
    short = max(8, image_size * 3 // 4)
    if app_user or r < 0.15:
        return image_size, image_size
    return (image_size, short) if r < 0.75 else (short, image_size)


# --- the data set --------------------------------------------------------------------------
def make_demo(out_dir: Path, hidden_labels_path: Path, n_train: int = 3000, n_test: int = 1000,
              n_users: int = 400, image_size: int = 64, seed: int = 0, side_table: Path | None = None) -> dict:
    """Write a synthetic SMPD-format data set into `out_dir` and the test labels to `hidden_labels_path`.

    side_table: also write a per-user side table there (`write_user_side_table`; off by default, and
    the data set's own files are the same either way). The same arguments give byte-identical files.
    Returns a small summary (counts, label statistics).
    """
    out_dir, hidden_labels_path = Path(out_dir).resolve(), Path(hidden_labels_path).resolve()
    if hidden_labels_path.is_relative_to(out_dir):
        raise ValueError(f"hidden test labels {hidden_labels_path} must lie outside the data folder {out_dir}, "
                         "or a run could read them")
    if n_train < 1 or n_test < 1 or n_users < 2 or image_size < 8:
        raise ValueError(f"make_demo: need n_train, n_test >= 1, n_users >= 2, image_size >= 8; got "
                         f"{n_train}, {n_test}, {n_users}, {image_size}")
    _claim_folder(out_dir)
    rng = np.random.default_rng(seed)
    tax = _taxonomy()
    users = _make_users(rng, n_users, tax)
    posts = _make_posts(rng, users, tax, n_train, n_test)
    labels = _labels(rng, users, posts, tax)
    styles = _styles(rng, tax)
    n = n_train + n_test
    pids = [str(p) for p in rng.choice(np.arange(1, 4 * n + 1000), size=n, replace=False)]
    image_state = rng.random(n)  # below the shares: missing or unreadable image
    shape_draw = rng.random(n)

    u, split_name = posts["user"], SPLITS
    img_paths = [f"{split_name[posts['split'][i]]}/{users['uid'][u[i]]}/{pids[i]}.jpg" for i in range(n)]
    quality = _phi(posts["visual"])
    n_missing = n_unreadable = 0
    for s, name in enumerate(split_name):
        with _replaced_folder(out_dir / name) as staging:
            for i in tqdm(np.flatnonzero(posts["split"] == s), desc=f"demo {name} images", unit="img",
                          mininterval=2.0, leave=False):
                if image_state[i] < MISSING_IMAGE_SHARE:
                    n_missing += 1
                    continue
                width, height = _image_shape(bool(users["app_user"][u[i]]), image_size, shape_draw[i])
                data = _render_image(styles[posts["subcategory"][i]], float(quality[i]), width, height,
                                     np.random.default_rng([seed, 1, i]))
                if image_state[i] < MISSING_IMAGE_SHARE + UNREADABLE_IMAGE_SHARE:
                    data = data[:len(data) // 3]  # a truncated download
                    n_unreadable += 1
                path = staging / img_paths[i].split("/", 1)[1]
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(data)

    for s, name in enumerate(split_name):
        rows = np.flatnonzero(posts["split"] == s)
        _write_split(out_dir, name, rows, pids, img_paths, users, posts, tax)
        if name == "train":
            _write_utf8(out_dir / "train_label.txt", "".join(f"{labels[i]:.2f}\n" for i in rows))
    test_rows = np.flatnonzero(posts["split"] == 1)
    _write_utf8(hidden_labels_path, "".join(f"{labels[i]:.2f}\n" for i in test_rows))
    if side_table is not None:
        write_user_side_table(Path(side_table), users, seed)

    train_labels, test_labels = labels[posts["split"] == 0], labels[test_rows]
    users_train, users_test = set(u[posts["split"] == 0]), set(u[test_rows])
    return {
        "n_train": n_train, "n_test": n_test,
        "n_users_train": len(users_train), "n_users_test": len(users_test),
        "n_users_test_only": len(users_test - users_train),
        "n_missing_images": n_missing, "n_unreadable_images": n_unreadable,
        "train_label_mean": round(float(train_labels.mean()), 3),
        "train_label_std": round(float(train_labels.std()), 3),
        "test_label_mean": round(float(test_labels.mean()), 3),
        "test_label_std": round(float(test_labels.std()), 3),
    }


MARKER = ".smpd-demo"  # marks a folder this module wrote, and may therefore replace


def _claim_folder(out_dir: Path) -> None:
    """Refuse to write into a non-empty folder the demo did not write (it could be the real SMPD)."""
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise ValueError(f"{out_dir} is not empty and was not written by make_demo (no {MARKER} file): "
                         "refusing to overwrite it; choose another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / MARKER) as tmp:
        tmp.write_text("synthetic SMPD-format demo data written by features/demo.py\n")


@contextlib.contextmanager
def _replaced_folder(path: Path) -> Iterator[Path]:
    """Yield an empty staging folder; if the block succeeds, it replaces `path` as a whole.

    The folder-level counterpart of common.io.atomic_path for thousands of small files:
    `path` holds either the old complete set or the new one, never a mix, and no stale image
    of an earlier demo survives. (A fsync per file costs up to 8 ms on a busy disk, 30 s here.)
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    retired = path.with_name(f".{path.name}.old")
    try:
        yield staging
        if retired.exists():
            shutil.rmtree(retired)
        if path.exists():
            os.replace(path, retired)
        os.replace(staging, path)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_split(out_dir: Path, split: str, rows: np.ndarray, pids: list[str], img_paths: list[str],
                 users: dict, posts: dict, tax: _Taxonomy) -> None:
    """The five JSON files and the image list of one split; every value a string, as in SMPD."""
    records: dict[str, list[dict]] = {kind: [] for kind in JSON_FIELDS}
    for i in rows:
        u = posts["user"][i]
        base = {"Uid": users["uid"][u], "Pid": pids[i]}
        tz_offset, tz_id, _, _ = TIMEZONES[users["tz_index"][u]]
        if users["tz_missing"][u]:
            tz_offset = tz_id = ""
        records["category"].append({**base, "Category": tax.categories[posts["category"][i]],
                                    "Subcategory": tax.subcategories[posts["subcategory"][i]],
                                    "Concept": tax.concepts[posts["concept"][i]]})
        records["text"].append({**base, "Title": posts["title"][i],
                                "Mediatype": "video" if posts["video"][i] else "photo", "Alltags": posts["tags"][i]})
        records["temporalspatial_information"].append({**base, "Postdate": str(posts["postdate"][i]),
                                                       "Latitude": posts["lat"][i], "Longitude": posts["lon"][i],
                                                       "Geoaccuracy": posts["geoacc"][i]})
        records["user_data"].append({
            **base, "photo_firstdate": str(users["photo_firstdate"][u]), "photo_count": str(users["photo_count"][u]),
            "ispro": str(users["ispro"][u]), "canbuypro": str(users["canbuypro"][u]), "timezone_offset": tz_offset,
            "photo_firstdatetaken": "" if users["firstdatetaken_empty"][u]
            else _format_time(users["photo_firstdatetaken"][u]),
            "timezone_timezone_id": tz_id, "user_description": users["description"][u],
            "location_description": users["location"][u]})
        records["additional_information"].append({**base, "Pathalias": users["alias"][u], "Ispublic": "1",
                                                   "Mediastatus": "ready"})
    for kind, items in records.items():
        _write_utf8(out_dir / f"{split}_{kind}.json", json.dumps(items, ensure_ascii=False))
    _write_utf8(out_dir / f"{split}_img_filepath.txt", "".join(img_paths[i] + "\n" for i in rows))


def _write_utf8(path: Path, text: str) -> None:
    # explicit UTF-8 (titles hold accents), whatever the locale
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))


# share of users a crawl missed (no row), and of rows whose follower count it could not read (empty cell)
SIDE_MISSING_USERS = 0.15
SIDE_MISSING_FOLLOWERS = 0.05


def write_user_side_table(path: Path, users: dict, seed: int) -> None:
    """A per-user table such as a team's crawl gives (Uid, followers, following, account_age_days), drawn
    from the demo's own latent user popularity: followers follow it with noise, following only follows
    activity. The signal is made here, so a run with it shows the side-table plumbing works, not that
    real crawled data help. Its own random stream: the data set's files do not change."""
    rng = np.random.default_rng([seed, 29])
    n = len(users["uid"])
    followers = np.floor(np.exp(4.0 + 1.1 * users["skill"] + rng.normal(0.0, 0.6, n)))
    following = np.floor(np.exp(4.5 + 0.3 * np.log(users["activity"]) + rng.normal(0.0, 0.8, n)))
    age_days = np.floor((DEMO_CRAWL_TIME - users["photo_firstdate"]) / 86400.0)
    keep = rng.random(n) >= SIDE_MISSING_USERS
    unread = rng.random(n) < SIDE_MISSING_FOLLOWERS
    lines = ["Uid,followers,following,account_age_days\n"]
    for i in np.flatnonzero(keep):
        shown = "" if unread[i] else f"{int(followers[i])}"
        lines.append(f"{users['uid'][i]},{shown},{int(following[i])},{int(age_days[i])}\n")
    _write_utf8(path, "".join(lines))


DEMO_CRAWL_TIME = datetime(2016, 6, 1, tzinfo=timezone.utc).timestamp()  # after the demo's last post
