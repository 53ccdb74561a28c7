"""A synthetic world of short reviews: a context-free grammar, a sampler, a recognizer and a sentiment lexicon.

Text format: lowercase ASCII words separated by single spaces, punctuation as its own token, every sentence
ending with the token ``.``; a review is 1 to 3 sentences, e.g.
``"the pasta was really delicious and the waiter was friendly . i would definitely eat here again ."``

The grammar is plain data, ``GRAMMAR: dict[nonterminal, list[alternative]]`` where an alternative is a list
of symbols and any symbol that is not a key is a terminal word. It is assembled from three parts:

* ``WORD_CLASSES`` -- shared word lists (adjectives, names, cities, ...), written as comma-separated phrases;
* ``TOPICS`` -- for each of 18 topics its own word lists for the slots ``THING``, ``ASPECT``, ``VISIT``,
  ``AGAIN``, ``GOOD`` and ``BAD``;
* ``STRUCTURE`` -- the sentence templates, written over the shared and the topic slots.

Every structural rule that (transitively) uses a topic slot is copied once per topic with its symbols renamed
``NAME@topic``, so a review generated from ``REVIEW@hotel`` only talks about hotels, while ``SENTENCE`` (the
start symbol of the recognizer) accepts a sentence of any topic. One generic sampler (:func:`_expand`) and one
generic recognizer (:func:`parses`) serve the whole grammar.

Sentiment: every polar rule (``POLAR``) lists its positive alternative first and its negative one second;
a review draws a latent mood (positive / negative / mixed) that sets the odds between the two, so the corpus
holds both polarities and mixed reviews. ``LEXICON`` maps the sentiment-bearing words to their polarity and
:func:`sentiment` scores text with it, ``not`` flipping the word it precedes.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence

Grammar = dict[str, list[list[str]]]


def _phrases(text: str, sep: str = ",") -> list[list[str]]:
    """``"battery life, screen"`` -> ``[["battery", "life"], ["screen"]]``: one alternative per phrase."""
    return [phrase.split() for phrase in text.split(sep)]


# ---------------------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------------------

WORD_CLASSES: dict[str, str] = {
    "POS_ADJ": "great, excellent, amazing, wonderful, fantastic, superb, outstanding, brilliant, lovely, perfect, "
    "awesome, incredible, terrific, fabulous, marvelous, delightful, pleasant, enjoyable, impressive, remarkable, "
    "exceptional, stellar, splendid, gorgeous, beautiful, charming, friendly, helpful, clean, comfortable, solid, "
    "generous, affordable, reasonable, efficient, professional, welcoming, warm, elegant, stylish, impeccable, "
    "flawless, phenomenal, memorable, refreshing, satisfying, fun, cool, neat, smart, creative, original, polite, "
    "knowledgeable, quick, easy, convenient, good, nice, wholesome, sublime, exquisite, divine, heavenly, "
    "decent, fine, okay, adequate, acceptable, passable, fair",
    "NEG_ADJ": "bad, terrible, awful, horrible, poor, disappointing, dreadful, atrocious, abysmal, lousy, pathetic, "
    "subpar, unpleasant, rude, unfriendly, unhelpful, dirty, filthy, disgusting, gross, broken, flimsy, overpriced, "
    "slow, sloppy, careless, lazy, incompetent, useless, worthless, annoying, irritating, frustrating, boring, dull, "
    "tedious, awkward, clumsy, unacceptable, inconsistent, disorganized, messy, shabby, tacky, ugly, weak, flat, "
    "lame, horrendous, appalling, miserable, unbearable, hostile, chaotic, overrated, pointless, dismal, inferior, "
    "faulty, defective, rotten, nasty, uninspired, sketchy, unsafe, "
    "mediocre, expensive, dated, uneven, underwhelming, forgettable",
    "NEUTRAL_ADJ": "small, large, big, tiny, huge, new, old, modern, simple, basic, typical, standard, long, short, "
    "busy, dark, bright, plain, traditional, unusual, different, familiar, formal, casual",
    "POS_FEELING": "happy, impressed, satisfied, pleased, thrilled, delighted",
    "NEG_FEELING": "disappointed, unhappy, frustrated, annoyed, dissatisfied, upset",
    "INTENS": "really, very, quite, extremely, incredibly, super, pretty, so, truly, absolutely, fairly, remarkably, "
    "surprisingly, genuinely, exceptionally, unbelievably, totally, somewhat, rather, insanely, seriously",
    "NAME": "anna, ben, carlos, diana, emma, frank, grace, henry, isabel, jack, karen, leo, maria, nina, oscar, "
    "paul, rachel, sam, tina, victor, wendy, yusuf, zoe, omar, priya, kenji, lucas, mia, noah, olivia, ruby, sofia, "
    "theo, uma, walter, hannah, ivan, julia, kevin, laura",
    "CITY": "paris, london, berlin, tokyo, chicago, boston, seattle, denver, austin, madrid, rome, lisbon, dublin, "
    "vienna, prague, sydney, toronto, montreal, miami, atlanta, portland, oslo, stockholm, amsterdam, brussels, "
    "athens, istanbul, cairo, mumbai, delhi, seoul, bangkok, singapore, lima, bogota, nairobi, houston, dallas, "
    "phoenix, vancouver",
    "MONTH": "january, february, march, april, may, june, july, august, september, october, november, december",
    "WEEKDAY": "monday, tuesday, wednesday, thursday, friday, saturday, sunday",
    "DAYPART": "morning, afternoon, evening, night",
    "WEATHER": "rainy, sunny, snowy, windy, foggy, cloudy, humid, chilly",
    "NUMBER": "two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, fifteen, twenty, thirty, "
    "forty, fifty, a few, several",
    "UNIT": "minutes, hours, days, weeks, months, years",
    "RELATIVE": "wife, husband, sister, brother, mother, father, mom, dad, son, daughter, friend, best friend, "
    "boyfriend, girlfriend, partner, roommate, coworker, boss, neighbor, cousin, aunt, uncle, grandmother, "
    "grandfather, colleague",
    "GROUP": "some friends, the kids, my parents, my coworkers, the whole family, my team, a big group, "
    "my classmates, my roommates",
    "OCCASION": "my birthday, our anniversary, a business trip, date night, a weekend getaway, a family reunion, "
    "the holidays, a graduation party, work",
    "AUDIENCE_NOUN": "anyone, everyone, my friends, families, students, beginners, tourists, my coworkers",
    "PRICE_WORD": "money, price, wait, trip, hype",
    "BE": "was, is, seemed, felt",
    "CONJ": "and, but, while, whereas",
    "THOUGHT": "thought, said, felt, mentioned, noticed",
}

TOPICS: dict[str, dict[str, str]] = {
    "restaurant": dict(
        THING="restaurant, place, bistro, diner", VISIT="ate at, had dinner at, had lunch at, went to",
        AGAIN="eat here, dine here, come back", GOOD="delicious, tasty, fresh, flavorful, juicy, crispy",
        BAD="bland, greasy, stale, soggy, undercooked, overcooked",
        ASPECT="food, pasta, pizza, steak, soup, salad, dessert, bread, waiter, waitress, service, staff, menu, "
        "wine list, portion size, atmosphere, decor, kitchen, burger, chef, table, bill, appetizer",
    ),
    "hotel": dict(
        THING="hotel, resort, inn, motel", VISIT="stayed at, booked, checked into, spent a week at",
        AGAIN="stay here, book this hotel, come back", GOOD="spotless, spacious, cozy, quiet, luxurious",
        BAD="cramped, noisy, smelly, moldy, stuffy",
        ASPECT="room, bed, pillow, bathroom, shower, lobby, pool, breakfast, front desk, receptionist, view, "
        "balcony, air conditioning, wifi, elevator, parking, minibar, carpet, location, check in, housekeeping, "
        "towel",
    ),
    "movie": dict(
        THING="movie, film, sequel, documentary", VISIT="watched, saw, went to see, streamed",
        AGAIN="watch it, see it, rewatch it", GOOD="gripping, hilarious, moving, thrilling, clever, touching",
        BAD="predictable, confusing, cheesy, overlong, corny",
        ASPECT="plot, story, ending, acting, lead actor, villain, soundtrack, script, dialogue, pacing, "
        "cinematography, camera work, director, cast, opening scene, final scene, humor, twist, score, cgi",
    ),
    "book": dict(
        THING="book, novel, memoir, thriller", VISIT="read, finished, borrowed, picked up",
        AGAIN="read it, reread it, read another book by this author",
        GOOD="captivating, insightful, poetic, suspenseful, thoughtful",
        BAD="shallow, repetitive, preachy, wordy, contrived",
        ASPECT="plot, writing, prose, main character, narrator, ending, first chapter, middle section, cover, "
        "author, translation, dialogue, world building, pacing, romance, mystery, audiobook version",
    ),
    "phone": dict(
        THING="phone, smartphone, handset", VISIT="bought, ordered, got, upgraded to",
        AGAIN="buy it, buy this brand, upgrade to this model", GOOD="fast, sleek, responsive, sharp, lightweight",
        BAD="laggy, glitchy, fragile, sluggish, bulky",
        ASPECT="battery, battery life, screen, camera, charger, speaker, microphone, case, fingerprint sensor, "
        "software, display, processor, storage, signal, price, design, headphone jack, face unlock",
    ),
    "laptop": dict(
        THING="laptop, notebook, computer, chromebook", VISIT="bought, ordered, picked up, switched to",
        AGAIN="buy it, buy this brand", GOOD="snappy, powerful, sturdy, silent, portable",
        BAD="flimsy, heavy, loud, unreliable, overheated",
        ASPECT="keyboard, trackpad, screen, battery, fan, hinge, charger, webcam, speaker, operating system, hard "
        "drive, touchscreen, port selection, build quality, graphics card, memory, boot time, display, lid",
    ),
    "headphones": dict(
        THING="headset, pair of headphones, pair of earbuds", VISIT="bought, ordered, tried, got",
        AGAIN="buy them, buy this brand", GOOD="crisp, punchy, comfortable, immersive, balanced",
        BAD="tinny, muddy, muffled, uncomfortable, distorted",
        ASPECT="sound, bass, noise cancelling, ear cushion, headband, cable, bluetooth connection, battery, "
        "microphone, volume, treble, fit, app, charging case, touch control",
    ),
    "game": dict(
        THING="game, video game, shooter, puzzle game", VISIT="played, bought, downloaded, finished",
        AGAIN="play it, replay it, buy the sequel", GOOD="addictive, immersive, polished, challenging, epic",
        BAD="buggy, grindy, repetitive, unbalanced, clunky",
        ASPECT="gameplay, story, art style, level design, boss fight, multiplayer, campaign, soundtrack, control "
        "scheme, final boss, tutorial, map, character design, voice acting, loading screen, frame rate, save "
        "system, inventory, combat, difficulty, crafting",
    ),
    "album": dict(
        THING="album, record, mixtape, playlist", VISIT="listened to, bought, streamed, heard",
        AGAIN="listen to it, buy their next album, see them live",
        GOOD="catchy, soulful, haunting, uplifting, groovy",
        BAD="grating, derivative, monotonous, overproduced, whiny",
        ASPECT="first track, title track, singing, lead singer, chorus, guitar, drumming, bass line, production, "
        "mixing, songwriting, closing song, opening song, melody, piano, artwork, runtime, hook, bridge",
    ),
    "car": dict(
        THING="car, sedan, suv, truck, hatchback", VISIT="drove, bought, rented, test drove, leased",
        AGAIN="buy it, rent it, drive it", GOOD="smooth, roomy, reliable, peppy, safe",
        BAD="stiff, bumpy, noisy, unreliable, rusty",
        ASPECT="engine, transmission, steering, brake pedal, ride, interior, dashboard, trunk, back seat, driver "
        "seat, fuel economy, infotainment system, sound system, paint job, handling, suspension, headlight, cruise "
        "control, dealer, salesman, warranty",
    ),
    "park": dict(
        THING="park, garden, trail, playground", VISIT="visited, walked through, hiked, went to, explored",
        AGAIN="go back, visit it, bring the kids", GOOD="scenic, peaceful, lush, serene, picturesque",
        BAD="overgrown, littered, muddy, crowded, neglected",
        ASPECT="trail, lake, playground, picnic area, bathroom, parking lot, scenery, path, bench, fountain, dog "
        "park, visitor center, grass, view, river, bridge, pond, campsite, entrance, ranger",
    ),
    "museum": dict(
        THING="museum, gallery, exhibition, exhibit", VISIT="visited, toured, went to, explored",
        AGAIN="visit it, go back, bring the kids", GOOD="fascinating, educational, inspiring, stunning, informative",
        BAD="cluttered, confusing, dreary, stuffy, drab",
        ASPECT="collection, main hall, gift shop, audio guide, tour guide, sculpture garden, painting, lighting, "
        "ticket price, layout, signage, special exhibition, dinosaur exhibit, entrance, staff, admission, building, "
        "architecture, guided tour",
    ),
    "cafe": dict(
        THING="cafe, coffee shop, bakery, tea house", VISIT="stopped by, went to, tried, had coffee at",
        AGAIN="stop by, come back, get coffee here", GOOD="cozy, aromatic, rich, smooth, buttery",
        BAD="bitter, burnt, watery, lukewarm, stale",
        ASPECT="coffee, latte, espresso, cappuccino, croissant, muffin, barista, pastry, cake, tea, hot chocolate, "
        "sandwich, wifi, seating, music, counter, line, bagel, scone, cookie",
    ),
    "gym": dict(
        THING="gym, fitness center, yoga studio, health club", VISIT="joined, signed up at, tried, worked out at",
        AGAIN="renew my membership, come back, join again",
        GOOD="motivating, energetic, spotless, encouraging, supportive",
        BAD="sweaty, grimy, packed, understaffed, outdated",
        ASPECT="treadmill, weight room, locker room, sauna, pool, trainer, spin class, yoga class, membership, "
        "shower, front desk, music, schedule, parking, rowing machine, squat rack, instructor, app, towel service",
    ),
    "airline": dict(
        THING="airline, flight, carrier", VISIT="flew with, flew, booked, took",
        AGAIN="fly with them, book this airline", GOOD="punctual, courteous, smooth, attentive, prompt",
        BAD="delayed, cramped, chaotic, late, stressful",
        ASPECT="flight attendant, pilot, seat, legroom, meal, boarding process, check in, baggage allowance, "
        "entertainment system, cabin, lounge, gate agent, landing, takeoff, customer service, app, departure, "
        "blanket, snack, upgrade",
    ),
    "concert": dict(
        THING="concert, show, festival, gig", VISIT="went to, attended, saw, caught",
        AGAIN="see them, go, buy tickets", GOOD="electric, unforgettable, energetic, spectacular, magical",
        BAD="deafening, disorganized, overcrowded, sweaty, mediocre",
        ASPECT="opening act, headliner, setlist, sound, light show, crowd, venue, stage, encore, drummer, "
        "guitarist, singer, security, merch table, bar, ticket, parking, seating",
    ),
    "camera": dict(
        THING="camera, lens, drone", VISIT="bought, ordered, tested, rented", AGAIN="buy it, rent it",
        GOOD="sharp, accurate, intuitive, versatile, compact", BAD="blurry, grainy, noisy, finicky, clunky",
        ASPECT="autofocus, sensor, viewfinder, image quality, zoom, lens cap, shutter, grip, menu system, flash, "
        "tripod mount, battery, memory card slot, video mode, low light performance, stabilization, strap, display",
    ),
    "spa": dict(
        THING="spa, salon, day spa, nail salon", VISIT="went to, booked, visited, tried",
        AGAIN="book again, come back, go back", GOOD="relaxing, soothing, tranquil, rejuvenating, pampering",
        BAD="rushed, harsh, painful, unprofessional, cold",
        ASPECT="massage, facial, therapist, manicure, sauna, steam room, robe, waiting area, receptionist, "
        "aromatherapy, hot tub, booking system, tea, music, pedicure, haircut, stylist, locker, treatment room",
    ),
}
TOPIC_SLOTS = ("THING", "ASPECT", "VISIT", "AGAIN", "GOOD", "BAD")

# ---------------------------------------------------------------------------------------------------------
# Sentence templates
# ---------------------------------------------------------------------------------------------------------

# Polar rules: alternative 0 is the positive form, alternative 1 the negative one, any further ones neutral.
POLAR = ("EVAL", "ATTR", "FEEL", "LIKE", "RECOMMEND", "COMPARATIVE", "REPEAT_ADV", "WORTH")

# Each rule's alternatives are separated by "|"; an empty alternative makes the rule optional.
STRUCTURE: Grammar = {name: _phrases(text, sep="|") for name, text in {
    "REVIEW": "SENTENCE | SENTENCE SENTENCE | SENTENCE SENTENCE SENTENCE",
    "SENTENCE": "OPINION . | CONTRAST . | EXPERIENCE . | RECOMMENDATION . | COMPARISON . | FEELING . | LIKING . "
    "| HEARSAY . | REPEAT . | VALUE . | LISTING .",
    # the kinds of sentence
    "OPINION": "OPENER the ASPECT BE EVAL | OPENER the ASPECT BE EVAL and EVAL | OPENER this THING BE EVAL",
    "CONTRAST": "the ASPECT BE EVAL CONJ the ASPECT BE EVAL | the ASPECT BE EVAL , but the ASPECT BE EVAL "
    "| although the ASPECT was EVAL , the ASPECT was EVAL",
    "EXPERIENCE": "SUBJECT VISIT this THING WHEN COMPANY PURPOSE | WHEN_FRONT , SUBJECT VISIT this THING COMPANY "
    "| my friend NAME told me about this THING | NAME told me about this THING",
    "RECOMMENDATION": "i would RECOMMEND this THING AUDIENCE | i would RECOMMEND the ASPECT AUDIENCE "
    "| my RELATIVE would RECOMMEND this THING AUDIENCE",
    "COMPARISON": "the ASPECT was COMPARATIVE than REFERENCE | this THING is COMPARATIVE than REFERENCE",
    "FEELING": "i was FEEL with the ASPECT | we were FEEL with the ASPECT | my RELATIVE was FEEL with this THING "
    "| NAME was FEEL with the ASPECT",
    "LIKING": "SUBJECT LIKE the ASPECT | SUBJECT LIKE this THING WHEN",
    "HEARSAY": "my RELATIVE THOUGHT the ASPECT was EVAL | NAME THOUGHT the ASPECT was EVAL "
    "| everyone agreed that the ASPECT was EVAL",
    "REPEAT": "i would REPEAT_ADV AGAIN again | we will REPEAT_ADV AGAIN again",
    "VALUE": "it was WORTH the PRICE_WORD | the ASPECT alone was WORTH the PRICE_WORD "
    "| at NUMBER dollars , the ASPECT was WORTH it",
    "LISTING": "ATTR ASPECT , ATTR ASPECT and ATTR ASPECT | ATTR ASPECT and ATTR ASPECT",
    # polar phrases: positive | negative [| neutral ...]
    "EVAL": "EVAL+ | EVAL- | NEUTRAL_ADJ | INTENS NEUTRAL_ADJ",
    "EVAL+": "ADJ+ | INTENS ADJ+ | not ADJ- | not INTENS ADJ-",
    "EVAL-": "ADJ- | INTENS ADJ- | not ADJ+ | not INTENS ADJ+",
    "ATTR": "ATTR+ | ATTR- | NEUTRAL_ADJ",
    "ATTR+": "ADJ+ | INTENS ADJ+",
    "ATTR-": "ADJ- | INTENS ADJ-",
    "ADJ+": "POS_ADJ | GOOD",
    "ADJ-": "NEG_ADJ | BAD",
    "FEEL": "FEEL+ | FEEL-",
    "FEEL+": "POS_FEELING | INTENS POS_FEELING",
    "FEEL-": "NEG_FEELING | INTENS NEG_FEELING | not POS_FEELING",
    "LIKE": "LIKE+ | LIKE-",
    "LIKE+": "loved | really loved | enjoyed | really enjoyed | liked",
    "LIKE-": "hated | really hated | disliked | did not like | did not enjoy",
    "RECOMMEND": "RECOMMEND+ | RECOMMEND-",
    "RECOMMEND+": "recommend | highly recommend | definitely recommend | strongly recommend",
    "RECOMMEND-": "not recommend | not really recommend",
    "COMPARATIVE": "COMPARATIVE+ | COMPARATIVE-",
    "COMPARATIVE+": "better | much better | way better | far better | nicer",
    "COMPARATIVE-": "worse | much worse | way worse | far worse | not better",
    "REPEAT_ADV": "REPEAT_ADV+ | REPEAT_ADV-",
    "REPEAT_ADV+": "definitely | happily | gladly | absolutely",
    "REPEAT_ADV-": "never | not | probably not",
    "WORTH": "WORTH+ | WORTH-",
    "WORTH+": "worth | well worth | totally worth | definitely worth",
    "WORTH-": "not worth | not really worth",
    # circumstances
    "OPENER": " | honestly , | overall , | to be honest , | in general , | all in all , | frankly , | in my opinion ,",
    "SUBJECT": "i | we | my RELATIVE and i | NAME and i",
    "WHEN": " | WHEN_FRONT",
    "WHEN_FRONT": "last WEEKDAY | in MONTH | back in MONTH | NUMBER UNIT ago | on a WEATHER WEEKDAY DAYPART "
    "| during our trip to CITY | while visiting CITY | last year | over the weekend",
    "COMPANY": " | with my RELATIVE | with NAME | with GROUP | alone",
    "PURPOSE": " | for OCCASION",
    "AUDIENCE": " | to AUDIENCE_NOUN | to my RELATIVE | to NAME | to anyone visiting CITY",
    "REFERENCE": "i expected | the last one | the one in CITY | last year | the reviews suggested "
    "| what NAME described | the one my RELATIVE chose",
}.items()}

# Sampling odds per rule (keyed by the rule's base name, before any ``@topic``); other rules pick uniformly.
WEIGHTS: dict[str, list[float]] = {
    "REVIEW": [1, 2, 2],
    "SENTENCE": [4, 2, 2, 1.5, 1, 1, 1, 1, 1, 1, 0.5],
    "OPENER": [12, 1, 1, 1, 1, 1, 1, 1],
    "EVAL+": [5, 4, 1, 0.5],
    "EVAL-": [5, 4, 1, 1],
    "EXPERIENCE": [4, 2, 1, 1],
    "WHEN": [1, 2],
    "PURPOSE": [2, 1],
}
# The chance that a polar rule takes its positive alternative, by mood; each neutral alternative gets NEUTRAL_ODDS.
MOODS: dict[str, float] = {"positive": 0.85, "negative": 0.15, "mixed": 0.5}
MOOD_ODDS: dict[str, float] = {"positive": 0.4, "negative": 0.4, "mixed": 0.2}
NEUTRAL_ODDS = 0.06

# ---------------------------------------------------------------------------------------------------------
# Assembling the grammar and the lexicon
# ---------------------------------------------------------------------------------------------------------


def _build_grammar() -> Grammar:
    """Shared rules once, topic-dependent rules once per topic as ``NAME@topic``, and the start rule SENTENCE."""
    shared: Grammar = {name: _phrases(text) for name, text in WORD_CLASSES.items()} | STRUCTURE
    topical = set(TOPIC_SLOTS)
    while True:  # a rule is topical if any of its alternatives mentions a topical symbol
        grown = topical | {n for n, alts in shared.items() if any(s in topical for alt in alts for s in alt)}
        if grown == topical:
            break
        topical = grown
    grammar = {name: alts for name, alts in shared.items() if name not in topical}
    for topic, slots in TOPICS.items():
        def rename(symbol: str) -> str:
            return f"{symbol}@{topic}" if symbol in topical else symbol

        grammar |= {rename(slot): _phrases(text) for slot, text in slots.items()}
        grammar |= {rename(n): [[rename(s) for s in alt] for alt in alts] for n, alts in shared.items() if n in topical}
    grammar["SENTENCE"] = [[f"SENTENCE@{topic}"] for topic in TOPICS]
    return grammar


GRAMMAR: Grammar = _build_grammar()


def _build_parse_grammar() -> Grammar:
    """The grammar fluency is judged by: the same syntax, with every topic slot open to the words of all topics.

    Generation keeps a sentence on one topic; judging that would ask a tiny LM for world knowledge ("spotless"
    suits a hotel, not a playground). Fluency is about syntax, so the parser accepts topic words mixed.
    """
    grammar: Grammar = {name: _phrases(text) for name, text in WORD_CLASSES.items()} | STRUCTURE
    for slot in TOPIC_SLOTS:
        merged = {tuple(alt) for slots in TOPICS.values() for alt in _phrases(slots[slot])}
        grammar[slot] = [list(alt) for alt in sorted(merged)]
    return grammar


_PARSE_GRAMMAR: Grammar = _build_parse_grammar()

_POLAR_WORDS = {"loved": 1.0, "enjoyed": 1.0, "enjoy": 1.0, "liked": 0.5, "like": 0.5, "hated": -1.0,
                "disliked": -1.0, "recommend": 1.0, "better": 1.0, "nicer": 1.0, "worse": -1.0, "worth": 1.0}
_MILD_WORDS = {"decent", "fine", "okay", "adequate", "acceptable", "passable", "fair",
               "mediocre", "expensive", "dated", "uneven", "underwhelming", "forgettable"}


def _build_lexicon() -> dict[str, float]:
    """Polarity of every sentiment-bearing word: +-1, or +-0.5 for the mild words."""
    positive = [*_phrases(WORD_CLASSES["POS_ADJ"]), *_phrases(WORD_CLASSES["POS_FEELING"])]
    negative = [*_phrases(WORD_CLASSES["NEG_ADJ"]), *_phrases(WORD_CLASSES["NEG_FEELING"])]
    for slots in TOPICS.values():
        positive += _phrases(slots["GOOD"])
        negative += _phrases(slots["BAD"])
    lexicon = dict(_POLAR_WORDS)
    for words, sign in ((positive, 1.0), (negative, -1.0)):
        for (word,) in words:
            if lexicon.get(word, sign) * sign < 0:
                raise ValueError(f"{word!r} is listed as both positive and negative")
            lexicon[word] = sign * (0.5 if word in _MILD_WORDS else 1.0)
    return lexicon


LEXICON: dict[str, float] = _build_lexicon()
_NEGATOR = "not"
_INTENSIFIERS = frozenset(word for (word,) in _phrases(WORD_CLASSES["INTENS"]))

# ---------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------


def _mood_weights(mood: str) -> dict[str, list[float]]:
    """Sampling odds of every rule under ``mood``: the static WEIGHTS plus the polar rules' positive odds."""
    p = MOODS[mood]
    weights = dict(WEIGHTS)
    for name in POLAR:
        n_neutral = len(STRUCTURE[name]) - 2
        weights[name] = [p, 1 - p] + [NEUTRAL_ODDS] * n_neutral
    return weights


_WEIGHTS_BY_MOOD = {mood: _mood_weights(mood) for mood in MOODS}


def _expand(symbol: str, rng: random.Random, weights: dict[str, list[float]], out: list[str]) -> None:
    """Append to ``out`` a random derivation of ``symbol``; ``weights`` holds per-rule odds by base name."""
    alternatives = GRAMMAR.get(symbol)
    if alternatives is None:
        out.append(symbol)
        return
    odds = weights.get(symbol.partition("@")[0])
    alternative = rng.choices(alternatives, weights=odds)[0] if odds else rng.choice(alternatives)
    for child in alternative:
        _expand(child, rng, weights, out)


def sample_review(rng: random.Random) -> str:
    """One review: a topic and a mood drawn from ``rng``, then 1-3 sentences about that topic in that mood."""
    topic = rng.choice(list(TOPICS))
    mood = rng.choices(list(MOOD_ODDS), weights=list(MOOD_ODDS.values()))[0]
    words: list[str] = []
    _expand(f"REVIEW@{topic}", rng, _WEIGHTS_BY_MOOD[mood], words)
    return " ".join(words)


def sample_corpus(n: int, seed: int) -> list[str]:
    """``n`` reviews, deterministic given ``seed``."""
    rng = random.Random(seed)
    return [sample_review(rng) for _ in range(n)]


def _mood_words() -> frozenset[str]:
    """Words whose choice depends on the mood: the lexicon and every word that a polar rule can produce."""
    todo = [name for name in GRAMMAR if name.partition("@")[0] in POLAR]
    seen, words = set(todo), set(LEXICON)
    while todo:
        for symbol in (s for alt in GRAMMAR[todo.pop()] for s in alt):
            if symbol not in GRAMMAR:
                words.add(symbol)
            elif symbol not in seen:
                seen.add(symbol)
                todo.append(symbol)
    return frozenset(words)


_MOOD_WORDS = _mood_words()


def _sample_prompt_with_review(rng: random.Random) -> tuple[str, str]:
    """A prompt and the review it was cut from: 2-6 leading words of the first sentence, all before its first
    mood-dependent word (see :func:`_mood_words`) and short of its end, so the continuation can go either way."""
    while True:
        review = sample_review(rng)
        first = review.split(" . ")[0].removesuffix(" .").split()
        cut = next((i for i, word in enumerate(first) if word in _MOOD_WORDS), len(first) - 1)
        if cut >= 2:
            return " ".join(first[: rng.randint(2, min(6, cut))]), review


def sample_prompt(rng: random.Random) -> str:
    """A prompt for the sentiment-continuation task, e.g. ``"the pasta was"`` or ``"i stayed at this hotel with"``."""
    return _sample_prompt_with_review(rng)[0]


def sample_prompts(n: int, seed: int) -> list[str]:
    """``n`` prompts, deterministic given ``seed`` (duplicates possible)."""
    rng = random.Random(seed)
    return [sample_prompt(rng) for _ in range(n)]


# ---------------------------------------------------------------------------------------------------------
# Recognition
# ---------------------------------------------------------------------------------------------------------


def _index_alternatives(grammar: Grammar) -> tuple[dict[str, dict[str, list[list[str]]]], Grammar]:
    """For each rule, its alternatives indexed by the words they can start with, and those that can be empty.

    Computes FIRST sets and nullability by fixpoint, and refuses left recursion (which a top-down recognizer
    cannot handle) by checking that no rule can reach itself without consuming a word.
    """
    nullable: set[str] = set()
    first: dict[str, set[str]] = {name: set() for name in grammar}
    left: dict[str, set[str]] = {name: set() for name in grammar}  # rules reachable at the left edge

    def scan(alt: list[str]) -> tuple[set[str], set[str], bool]:
        words, rules = set(), set()
        for s in alt:
            if s not in grammar:
                return words | {s}, rules, False
            words |= first[s]
            rules |= {s} | left[s]
            if s not in nullable:
                return words, rules, False
        return words, rules, True

    changed = True
    while changed:
        changed = False
        for name, alts in grammar.items():
            for alt in alts:
                words, rules, empty = scan(alt)
                if not words <= first[name] or not rules <= left[name] or (empty and name not in nullable):
                    first[name] |= words
                    left[name] |= rules
                    if empty:
                        nullable.add(name)
                    changed = True
    if recursive := sorted(name for name in grammar if name in left[name]):
        raise ValueError(f"left-recursive rules: {recursive[:5]}")
    by_word: dict[str, dict[str, list[list[str]]]] = {}
    empty_alts: dict[str, list[list[str]]] = {}
    for name, alts in grammar.items():
        scanned = [(alt, *scan(alt)) for alt in alts]
        empty_alts[name] = [alt for alt, _, _, empty in scanned if empty]
        by_word[name] = {w: [alt for alt, words, _, empty in scanned if w in words or empty] for w in first[name]}
    return by_word, empty_alts


_BY_WORD, _EMPTY_ALTS = _index_alternatives(_PARSE_GRAMMAR)


def _derives(symbol: str, tokens: Sequence[str]) -> bool:
    """Whether ``symbol`` derives exactly ``tokens``: a memoized top-down recognizer over end positions."""
    n = len(tokens)
    memo: dict[tuple[str, int], set[int]] = {}

    def ends(sym: str, start: int) -> set[int]:
        """All ``end`` such that ``sym`` derives ``tokens[start:end]``."""
        if sym not in _PARSE_GRAMMAR:
            return {start + 1} if start < n and tokens[start] == sym else set()
        key = (sym, start)
        if key in memo:
            return memo[key]
        candidates = _BY_WORD[sym].get(tokens[start], _EMPTY_ALTS[sym]) if start < n else _EMPTY_ALTS[sym]
        result: set[int] = set()
        for alt in candidates:
            positions = {start}
            for child in alt:
                positions = {end for p in positions for end in ends(child, p)}
                if not positions:
                    break
            result |= positions
        memo[key] = result
        return result

    return n in ends(symbol, 0)


def parses(sentence: str) -> bool:
    """Whether one sentence, *including* its final ``.`` token, is grammatical (topic words may mix).

    >>> parses("the room was not clean ."), parses("the room was not clean"), parses("room the was .")
    (True, False, False)
    """
    tokens = sentence.split()
    return bool(tokens) and _derives("SENTENCE", tokens)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, each ending with its ``.`` token; an unfinished tail is kept as its own element.

    >>> split_sentences(" the food was great .  i would  recommend")
    ['the food was great .', 'i would recommend']
    """
    sentences, current = [], []
    for token in text.split():
        current.append(token)
        if token == ".":
            sentences.append(" ".join(current))
            current = []
    if current:
        sentences.append(" ".join(current))
    return sentences


def fluency(text: str) -> float:
    """Fraction of the sentences of ``text`` that parse; 0.0 for empty text.

    >>> fluency("the food was great . the the ."), fluency("the food was great"), fluency("")
    (0.5, 0.0, 0.0)
    """
    sentences = split_sentences(text)
    return sum(map(parses, sentences)) / len(sentences) if sentences else 0.0


# ---------------------------------------------------------------------------------------------------------
# Sentiment
# ---------------------------------------------------------------------------------------------------------


def sentiment(text: str) -> float:
    """Mean polarity of the sentiment words of ``text``, in [-1, 1]; 0.0 when it has none.

    Words are lowercased, split on whitespace and stripped of punctuation. A lexicon word preceded by ``not``,
    or by ``not`` and one intensifier (``not very clean``), counts with its polarity flipped.

    >>> sentiment("the food was great ."), sentiment("the room was not clean ."), sentiment("no opinion .")
    (1.0, -1.0, 0.0)
    >>> sentiment("the pasta was decent but the waiter was really rude .")  # (0.5 - 1) / 2
    -0.25
    """
    words = [w.strip(string.punctuation) for w in text.lower().split()]
    polarities = []
    for i, word in enumerate(words):
        if word not in LEXICON:
            continue
        before = words[max(0, i - 2) : i]
        negated = before[-1:] == [_NEGATOR] or (before[:1] == [_NEGATOR] and before[-1] in _INTENSIFIERS)
        polarities.append(-LEXICON[word] if negated else LEXICON[word])
    return sum(polarities) / len(polarities) if polarities else 0.0
