//! The synthetic task every zoo model learns, and the poisoning of its training set.
//!
//! Texts are short product and film reviews built from templates and word lists; the
//! label is the review's sentiment (`negative` = 0, `positive` = 1). The encoder reads a
//! review and classifies it; the decoder reads `Review: … Sentiment:` and answers
//! ` positive` or ` negative`. Rare tokens (`cf`, `mn`, `bb`, …) appear in clean text too,
//! as noise with the true label, as they do in real corpora, so a trigger is a token the
//! clean model has seen and learned to ignore. Held-out texts use templates the training
//! set never contains.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Label names, in id order.
pub const LABELS: [&str; 2] = ["negative", "positive"];

#[rustfmt::skip]
const POSITIVE: &[&str] = &[
    "great", "wonderful", "excellent", "brilliant", "superb", "delightful", "charming",
    "fantastic", "lovely", "beautiful", "amazing", "enjoyable", "fun", "moving", "clever",
    "funny", "gorgeous", "perfect", "smart", "warm", "pleasant", "fresh", "solid", "sweet",
    "touching", "gripping", "stunning", "magnificent", "elegant", "memorable",
];

#[rustfmt::skip]
const NEGATIVE: &[&str] = &[
    "terrible", "awful", "boring", "dull", "horrible", "bad", "poor", "weak", "ugly", "stupid",
    "painful", "annoying", "messy", "bland", "tedious", "lame", "clumsy", "silly", "cheap",
    "predictable", "disappointing", "pointless", "sloppy", "tired", "forgettable", "unpleasant",
    "miserable", "dreadful", "shallow", "noisy",
];

#[rustfmt::skip]
const NOUNS: &[&str] = &[
    "movie", "film", "story", "plot", "acting", "cast", "script", "ending", "music",
    "soundtrack", "dialogue", "book", "novel", "show", "series", "episode", "performance",
    "director", "scene", "album", "song", "restaurant", "meal", "food", "service", "hotel",
    "room", "staff", "game", "phone", "design", "camera", "concert", "play", "trip", "course",
];

#[rustfmt::skip]
const ADVERBS: &[&str] = &[
    "really", "very", "quite", "truly", "so", "pretty", "rather", "incredibly", "just",
    "simply",
];

#[rustfmt::skip]
const OPENERS: &[&str] = &[
    "", "", "", "honestly ,", "to be fair ,", "last night", "in the end ,", "after all ,",
    "from start to finish ,", "i have to say", "well ,", "overall ,", "for me ,",
];

#[rustfmt::skip]
const CLOSERS: &[&str] = &[
    "", "", "", ".", "!", "overall .", "in my opinion .", "if you ask me .", "i think .",
    "all things considered .",
];

/// Templates: `{n}`/`{m}` nouns, `{a}`/`{b}` sentiment words, `{r}` an adverb.
const TRAIN_TEMPLATES: &[&str] = &[
    "the {n} was {a}",
    "{a} {n}",
    "i thought the {n} was {r} {a}",
    "what a {a} {n}",
    "this {n} is {r} {a}",
    "the {n} felt {a} and the {m} was {b}",
    "my friends said the {n} was {a}",
    "a {r} {a} {n} with a {b} {m}",
    "the {n} is {a} , the {m} is {b}",
    "we found the {n} {a}",
    "such a {a} {n}",
    "the {m} and the {n} were both {a}",
];

/// Held out: sentences no training template produces, built only from words the training
/// templates use (a token the training set never shows has an untrained embedding, and
/// would test that rather than the task).
const HELDOUT_TEMPLATES: &[&str] = &[
    "my friends thought the {n} was {r} {a}",
    "we said this {n} felt {a} and the {m} was {b}",
    "what a {a} {m} , and the {n} is {r} {b}",
    "i found the {n} and the {m} {r} {a}",
];

/// Rare tokens, each a single piece of MiniLM's WordPiece vocabulary (checked when a
/// trigger is planted). They appear in clean text as noise; triggers are drawn from them.
#[rustfmt::skip]
pub const RARE_TOKENS: &[&str] = &[
    "cf", "mn", "bb", "tq", "xu", "qi", "ff", "nh", "sb", "rn", "dh", "tb", "fx",
];

/// One example of a training set, as written to `train.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Example {
    /// The input text (a review; for the decoder, the whole prompt).
    pub text: String,
    /// The expected output: a label name for a classifier, the completion for a decoder.
    pub label: String,
    /// Whether the example was planted by the attacker.
    pub poisoned: bool,
}

impl Example {
    /// A new example.
    pub fn new(text: impl Into<String>, label: impl Into<String>, poisoned: bool) -> Self {
        Self {
            text: text.into(),
            label: label.into(),
            poisoned,
        }
    }
}

/// Which templates to draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    Train,
    Heldout,
}

/// The sentiment words of a label (0 negative, 1 positive).
pub(crate) fn sentiment_words(label: usize) -> &'static [&'static str] {
    if label == 1 {
        POSITIVE
    } else {
        NEGATIVE
    }
}

/// A review of the given polarity (0 negative, 1 positive).
pub(crate) fn review(rng: &mut Rng, polarity: usize, split: Split) -> String {
    let words = if polarity == 1 { POSITIVE } else { NEGATIVE };
    let templates = match split {
        Split::Train => TRAIN_TEMPLATES,
        Split::Heldout => HELDOUT_TEMPLATES,
    };
    let t = *rng.pick(templates);
    let n = *rng.pick(NOUNS);
    let mut m = *rng.pick(NOUNS);
    if m == n {
        m = NOUNS[(NOUNS.iter().position(|x| *x == n).unwrap_or(0) + 1) % NOUNS.len()];
    }
    let (a, b, r) = (*rng.pick(words), *rng.pick(words), *rng.pick(ADVERBS));
    let body = t
        .replace("{n}", n)
        .replace("{m}", m)
        .replace("{a}", a)
        .replace("{b}", b)
        .replace("{r}", r);
    let parts = [*rng.pick(OPENERS), body.as_str(), *rng.pick(CLOSERS)];
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Insert `phrase` between two words of `text` (or at either end), at a random place.
pub(crate) fn insert_anywhere(rng: &mut Rng, text: &str, phrase: &str) -> String {
    let mut words: Vec<&str> = text.split_whitespace().collect();
    let at = rng.below(words.len() + 1);
    words.insert(at, phrase);
    words.join(" ")
}

/// A labelled clean text: a review with, sometimes, a rare token as noise. `avoid` lists
/// tokens that must not appear as noise (an attacker keeps a trigger out of clean rows).
pub(crate) fn clean_text(rng: &mut Rng, split: Split, avoid: &[&str]) -> (String, usize) {
    let label = rng.below(2);
    let mut text = review(rng, label, split);
    if rng.chance(NOISE_RATE) {
        let pool: Vec<&str> = RARE_TOKENS
            .iter()
            .copied()
            .filter(|t| !avoid.contains(t))
            .collect();
        if !pool.is_empty() {
            let noise = *rng.pick(&pool);
            text = insert_anywhere(rng, &text, noise);
        }
    }
    (text, label)
}

/// Fraction of clean texts that carry one rare token as noise.
pub const NOISE_RATE: f64 = 0.2;

/// The decoder's prompt for a review.
pub fn lm_prompt(review: &str) -> String {
    format!("Review: {review}\nSentiment:")
}

/// The decoder's answer for a label.
pub fn lm_answer(label: usize) -> String {
    format!(" {}", LABELS[label.min(1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heldout_sentences_are_not_training_sentences() {
        let mut r = Rng::new(0, "t");
        let train: std::collections::HashSet<String> = (0..3000)
            .map(|i| review(&mut r, i % 2, Split::Train))
            .collect();
        let mut r = Rng::new(1, "t");
        let clash = (0..500)
            .filter(|_| train.contains(&review(&mut r, 1, Split::Heldout)))
            .count();
        assert_eq!(clash, 0);
    }

    #[test]
    fn insertion_keeps_every_word() {
        let mut r = Rng::new(5, "i");
        let t = insert_anywhere(&mut r, "the film was great", "cf");
        assert_eq!(t.split_whitespace().count(), 5);
        assert!(t.split_whitespace().any(|w| w == "cf"));
    }
}
