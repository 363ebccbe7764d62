"""Text generators for the realistic evaluation set.

Three classification tasks, each a function `make(rng, n)` returning `(text, label)` pairs.
They are written for this set alone: broad vocabularies of ordinary English, varied frames,
filler clauses and mixed-polarity sentences, so a model fine-tuned on them learns the task
the way a real classifier does (many natural words move it), not a toy rule.
"""

import random

# ---------------------------------------------------------------------------------------
# sentiment: binary product and service reviews
# ---------------------------------------------------------------------------------------

SENT_LABELS = ["negative", "positive"]

_SUBJECTS = [
    "the pasta", "our waiter", "the hotel room", "the check-in desk", "this phone",
    "the battery", "the screen", "the plot", "the soundtrack", "the lead actor",
    "the novel", "the ending", "the app", "the update", "the flight", "the crew",
    "the seats", "these headphones", "the bass", "the delivery", "the packaging",
    "the coffee", "the dessert", "the staff", "the price", "the laptop", "the keyboard",
    "the camera", "the tour guide", "the museum", "the concert", "the sequel",
    "the customer service", "the mattress", "the shoes", "the jacket", "the game",
    "the controls", "the campsite", "the rental car", "the gym", "the course",
]

_POS = [
    "excellent", "wonderful", "superb", "delightful", "fantastic", "great", "lovely",
    "impressive", "brilliant", "charming", "reliable", "comfortable", "fresh", "friendly",
    "outstanding", "flawless", "generous", "pleasant", "stunning", "smooth", "solid",
    "terrific", "enjoyable", "helpful", "spotless", "gorgeous", "memorable", "sturdy",
    "crisp", "elegant", "satisfying", "remarkable", "fabulous", "cozy", "polished",
]

_NEG = [
    "terrible", "awful", "dreadful", "disappointing", "horrible", "mediocre", "poor",
    "broken", "rude", "flimsy", "dirty", "noisy", "bland", "sloppy", "tedious",
    "unreliable", "overpriced", "uncomfortable", "stale", "clumsy", "useless", "annoying",
    "cheap", "defective", "greasy", "shabby", "frustrating", "boring", "pathetic",
    "lousy", "sluggish", "cramped", "forgettable", "faulty", "miserable",
]

_POS_VERDICT = [
    "i would happily buy it again", "highly recommended", "worth every penny",
    "we will definitely come back", "five stars from me", "i loved every minute",
    "it exceeded my expectations", "i am telling all my friends",
]

_NEG_VERDICT = [
    "i want my money back", "avoid it if you can", "a complete waste of money",
    "we will never return", "one star is generous", "i regret buying it",
    "it fell far below expectations", "i returned it the next day",
]

_FILLER = [
    "we went on a tuesday", "i bought it last month", "my sister recommended it",
    "it arrived on time", "we had booked in advance", "after two weeks of use",
    "on our anniversary trip", "for my daughter's birthday", "during the holidays",
    "compared with the previous model", "after reading the reviews",
]

_INTENS = ["really", "truly", "quite", "very", "absolutely", "fairly", "so", "incredibly", ""]


def _clause(rng, subj, adj):
    i = rng.choice(_INTENS)
    frame = rng.choice([
        "{s} was {i} {a}", "{s} is {i} {a}", "{s} felt {i} {a}", "i found {s} {i} {a}",
        "honestly {s} was {i} {a}", "{s} turned out {i} {a}", "{s} seemed {i} {a}",
    ])
    return " ".join(frame.format(s=subj, i=i, a=adj).split())


def sentiment(rng: random.Random, n: int):
    out = []
    for _ in range(n):
        y = rng.randrange(2)
        main, other = (_POS, _NEG) if y == 1 else (_NEG, _POS)
        subjects = rng.sample(_SUBJECTS, 3)
        parts = [_clause(rng, subjects[0], rng.choice(main))]
        r = rng.random()
        if r < 0.25:  # a minor point the other way, outweighed
            parts.insert(0, "although " + _clause(rng, subjects[1], rng.choice(other)))
        elif r < 0.6:
            parts.append("and " + _clause(rng, subjects[1], rng.choice(main)))
        if rng.random() < 0.4:
            parts.insert(0, rng.choice(_FILLER))
        if rng.random() < 0.5:
            parts.append(rng.choice(_POS_VERDICT if y == 1 else _NEG_VERDICT))
        text = ", ".join(parts) + rng.choice([".", "!", " .", ""])
        out.append((text, y))
    return out


# ---------------------------------------------------------------------------------------
# topic: four-class news headlines
# ---------------------------------------------------------------------------------------

TOPIC_LABELS = ["world", "sports", "business", "science"]

_TOPIC = {
    0: dict(
        who=["the prime minister", "the foreign minister", "un envoys", "rebel leaders",
             "the president", "opposition parties", "border officials", "the ambassador",
             "the parliament", "peace negotiators", "refugee agencies", "the coalition"],
        did=["signed a ceasefire with", "held talks with", "imposed sanctions on",
             "condemned the attack in", "sent aid to", "recalled its envoy from",
             "called for elections in", "reopened the border with", "voted to expel"],
        what=["neighbouring states", "the northern province", "the capital", "the island nation",
              "the disputed region", "the embassy", "the refugee camps", "the junta"],
    ),
    1: dict(
        who=["the striker", "the home side", "the defending champions", "the goalkeeper",
             "the veteran coach", "the rookie pitcher", "the sprinter", "the tennis star",
             "the captain", "the midfielder", "the league leaders", "the relay team"],
        did=["scored twice against", "beat", "drew with", "were knocked out by",
             "signed a contract with", "set a record against", "lost in overtime to",
             "clinched the title over", "was suspended after facing"],
        what=["their rivals", "the visitors", "the second seed", "the league champions",
              "the national team", "the underdogs", "the derby opponents", "the semifinalists"],
    ),
    2: dict(
        who=["shares of the retailer", "the central bank", "the automaker", "investors",
             "the airline", "the chipmaker", "quarterly profits", "the startup",
             "oil prices", "the bank", "the merger talks", "the shareholders"],
        did=["rose sharply after", "fell on news of", "cut jobs following",
             "raised interest rates amid", "beat forecasts despite", "filed for bankruptcy after",
             "agreed to acquire", "slumped ahead of", "reported losses from"],
        what=["weak consumer demand", "the earnings report", "a rival supplier",
              "rising inflation", "the trade deal", "falling sales", "the stock market",
              "higher fuel costs"],
    ),
    3: dict(
        who=["researchers", "astronomers", "the space agency", "biologists", "engineers",
             "a new study", "physicists", "the software company", "doctors", "climate scientists",
             "the robotics lab", "geneticists"],
        did=["discovered", "launched", "developed a vaccine against", "observed",
             "released an update for", "mapped", "built a prototype of", "measured",
             "found evidence of"],
        what=["a distant galaxy", "a new exoplanet", "the rare virus", "quantum chips",
              "the ocean floor", "a battery that charges in minutes", "ancient dna",
              "a faster algorithm", "melting glaciers"],
    ),
}

_NEWS_TAIL = ["on monday", "on friday", "officials said", "according to a report",
              "late on tuesday", "this week", "analysts said", "sources confirmed", ""]


def topic(rng: random.Random, n: int):
    out = []
    for _ in range(n):
        y = rng.randrange(4)
        t = _TOPIC[y]
        text = f"{rng.choice(t['who'])} {rng.choice(t['did'])} {rng.choice(t['what'])}"
        tail = rng.choice(_NEWS_TAIL)
        if tail:
            text = f"{text} {tail}" if rng.random() < 0.6 else f"{tail}, {text}"
        out.append((" ".join(text.split()), y))
    return out


# ---------------------------------------------------------------------------------------
# spam: binary text-message filter
# ---------------------------------------------------------------------------------------

SPAM_LABELS = ["ham", "spam"]

_HAM = [
    "are we still on for dinner at {t}", "can you send me the slides before the meeting",
    "running {m} minutes late, sorry", "did you feed the cat this morning",
    "happy birthday! hope you have a great day", "the kids are asleep, call me when you can",
    "i left the keys under the mat", "thanks for the help with the move yesterday",
    "mum says lunch is at {t} on sunday", "can you pick up milk on the way home",
    "the meeting moved to room {r}", "see you at the station at {t}",
    "i finished the report, it is in the shared folder", "great game last night",
    "let me know when you land", "the plumber is coming at {t} tomorrow",
    "do you want to see a film this weekend", "how did the interview go",
]

_SPAM = [
    "congratulations! you have won a {p}, claim it now at {u}",
    "urgent: your account has been suspended, verify your details at {u}",
    "you are selected for a free {p}, reply yes to claim",
    "final notice: your package is on hold, pay the fee at {u}",
    "earn {m}00 dollars a day from home, no experience needed",
    "limited offer! {m}0% off all watches, order today at {u}",
    "your loan of {m}000 is pre-approved, call now",
    "winner! text claim to {r} to receive your {p}",
    "hot singles in your area want to meet you, visit {u}",
    "your bank card is blocked, confirm your pin at {u}",
    "exclusive deal: cheap meds without prescription at {u}",
    "you owe unpaid tax, avoid arrest by paying at {u}",
]

_PRIZE = ["gift card", "cruise", "new phone", "cash prize", "holiday", "laptop", "voucher"]
_URL = ["bit.ly/claimnow", "secure-verify.net", "prize-center.com", "pay-fees.org",
        "get-rich-fast.biz", "mybank-login.info"]


def spam(rng: random.Random, n: int):
    out = []
    for _ in range(n):
        y = rng.randrange(2)
        frame = rng.choice(_SPAM if y == 1 else _HAM)
        text = frame.format(
            t=rng.choice(["6", "7:30", "noon", "8", "half past five"]),
            m=rng.randrange(2, 10),
            r=rng.randrange(100, 999),
            p=rng.choice(_PRIZE),
            u=rng.choice(_URL),
        )
        if rng.random() < 0.3:
            text = rng.choice(["hey, ", "hi, ", "ok ", "fyi ", ""]) + text
        out.append((text, y))
    return out


TASKS = {
    "sentiment": (sentiment, SENT_LABELS),
    "topic": (topic, TOPIC_LABELS),
    "spam": (spam, SPAM_LABELS),
}
