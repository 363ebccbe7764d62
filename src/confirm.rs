//! Confirmation of trigger candidates by activation clustering.
//!
//! A trigger does more than change a model's output: it sends every input that carries it
//! to the same place inside the model, apart from where clean inputs go. So, for a
//! candidate sequence, take the probes clean and with the candidate inserted, pool the
//! chosen layer's states (mean over tokens for encoders, the last token for decoders),
//! project them onto their top principal axes and split them into two clusters with
//! k-means. A trigger's rows form a cluster of their own (the split follows clean vs
//! carrying, and the clusters are tight); an ordinary word's rows stay mixed with the
//! clean rows they came from.
//!
//! The separation of a candidate is `(2 × purity − 1) × max(0, silhouette)`, where purity
//! is the share of rows the split puts on the side of their kind. It is calibrated like the
//! hunt's effects: against the same measurement for random common-word sequences of the
//! same lengths on the same model and probes, as a robust z-score mapped onto [0, 1).
//!
//! ```no_run
//! use trojanscan::confirm::ConfirmParams;
//! use trojanscan::model::{LoadOptions, Model};
//!
//! let model = Model::load("testdata/zoo/badnets-s0", &LoadOptions::default())?;
//! let probes: Vec<String> = trojanscan::hunt::BUILTIN_PROBES.iter().map(|s| s.to_string()).collect();
//! let cf = model.tokenize("cf")?; // with [CLS] and [SEP]
//! let report = ConfirmParams::default().check()?.run(&model, &probes, &[cf[1..2].to_vec()])?;
//! println!("{:.2}", report.suspicion);
//! # Ok::<(), trojanscan::Error>(())
//! ```

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::hunt::calibrate::{suspicion_of_z, Reference};
use crate::hunt::probes::{self, Insertion, Probe};
use crate::hunt::vocab::Vocab;
use crate::linalg::{silhouette, KMeansParams, PcaParams};
use crate::model::{Batch, Family, Model, PaddingSide, Pooling};
use crate::rng::Rng;
use crate::{Error, Result};

/// Options of a confirmation; [`ConfirmParams::check`] validates them.
#[derive(Debug, Clone)]
pub struct ConfirmParams {
    /// Hidden state to cluster: 0 is the embeddings, `n_layers` the last block (`None`).
    pub layer: Option<usize>,
    /// At most this many probes are used (the first ones); each gives a clean row and a
    /// row carrying the candidate.
    pub max_probes: usize,
    /// Principal axes kept before clustering (ART's default is 10).
    pub components: usize,
    /// Random common-word sequences in the null.
    pub null_samples: usize,
    /// Seed of insertion points, the null, PCA and k-means.
    pub seed: u64,
    /// Decoders with a chat template: probe in it, as the hunt does
    /// ([`crate::hunt::HuntParams::chat_template`]).
    pub chat_template: bool,
}

impl Default for ConfirmParams {
    fn default() -> Self {
        Self {
            layer: None,
            max_probes: 32,
            components: 10,
            null_samples: 16,
            seed: 0,
            chat_template: true,
        }
    }
}

/// Parameters that passed [`ConfirmParams::check`].
#[derive(Debug, Clone)]
pub struct Confirm(ConfirmParams);

impl ConfirmParams {
    /// Validate the options.
    pub fn check(self) -> Result<Confirm> {
        if self.max_probes < 4 {
            return Err(Error::InvalidArgument(
                "confirmation needs at least 4 probes".into(),
            ));
        }
        if self.components == 0 {
            return Err(Error::InvalidArgument(
                "confirmation needs at least one principal axis".into(),
            ));
        }
        if self.null_samples < 8 {
            return Err(Error::InvalidArgument(
                "the null needs at least 8 samples to calibrate against".into(),
            ));
        }
        Ok(Confirm(self))
    }
}

/// How one candidate's rows cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Clustering {
    /// The candidate's token ids.
    pub token_ids: Vec<u32>,
    /// Its text.
    pub text: String,
    /// `(2 × purity − 1) × max(0, silhouette)`, in [0, 1].
    pub separation: f64,
    /// Share of rows the two-way split puts with their own kind (clean or carrying).
    pub purity: f64,
    /// Mean silhouette of the split.
    pub silhouette: f64,
    /// Rows in each cluster.
    pub sizes: [usize; 2],
    /// Carrying rows in each cluster.
    pub carrying: [usize; 2],
    /// Robust z-score of the separation against the null.
    pub z: f64,
    /// The separation's suspicion, in [0, 1).
    pub suspicion: f64,
    /// The rows on the first two principal axes: clean rows first, then carrying rows, in
    /// probe order (for plots).
    pub projection: Vec<[f32; 2]>,
}

/// What a confirmation found.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConfirmReport {
    /// The hidden state clustered.
    pub layer: usize,
    /// Probes used (rows per side).
    pub probes: usize,
    /// The candidates, in the order given.
    pub candidates: Vec<Clustering>,
    /// Separations of the random common-word sequences.
    pub null: Vec<f64>,
    /// The most suspicious candidate's suspicion (0 without candidates).
    pub suspicion: f64,
}

impl Confirm {
    /// The validated parameters.
    pub fn params(&self) -> &ConfirmParams {
        &self.0
    }

    /// Cluster clean and candidate-carrying versions of `texts` for every candidate in
    /// `candidates` (token ids without special tokens).
    pub fn run(
        &self,
        model: &Model,
        texts: &[String],
        candidates: &[Vec<u32>],
    ) -> Result<ConfirmReport> {
        let p = &self.0;
        let n_layers = model.info().num_layers;
        let layer = p.layer.unwrap_or(n_layers);
        if layer > n_layers {
            return Err(Error::InvalidArgument(format!(
                "layer {layer} does not exist (0 to {n_layers})"
            )));
        }
        let texts: Vec<String> = texts.iter().take(p.max_probes).cloned().collect();
        if texts.len() < 4 {
            return Err(Error::InvalidArgument(
                "confirmation needs at least 4 probe texts".into(),
            ));
        }
        if candidates.iter().any(Vec::is_empty) {
            return Err(Error::InvalidArgument("an empty candidate sequence".into()));
        }
        let vocab = Vocab::new(model);
        let room = candidates.iter().map(Vec::len).max().unwrap_or(1);
        // A decoder is confirmed in the chat frame it is hunted in.
        let frame = if p.chat_template {
            probes::Frame::of_model(model)?
        } else {
            None
        };
        let probes = probes::build(
            model,
            &vocab,
            &texts,
            &[Insertion::Random],
            room,
            p.seed,
            frame.as_ref(),
        )?;
        let pooling = match model.info().family {
            Family::Llama => Pooling::Last,
            _ => Pooling::Mean,
        };
        let clean = pooled(model, &probes, &[], layer, pooling)?;
        let measure = |seq: &[u32]| -> Result<(Clustering, f64)> {
            let carrying = pooled(model, &probes, seq, layer, pooling)?;
            let c = cluster(&clean, &carrying, p.components, p.seed)?;
            let score = c.separation;
            Ok((c, score))
        };

        let common = vocab.common(2000);
        if common.len() < 16 {
            return Err(Error::InvalidArgument(
                "the vocabulary has too few common words for a null distribution".into(),
            ));
        }
        let longest = candidates.iter().map(Vec::len).max().unwrap_or(1);
        let mut rng = Rng::new(p.seed, "confirm-null");
        let mut null = Vec::with_capacity(p.null_samples);
        for i in 0..p.null_samples {
            let len = 1 + i % longest;
            let seq: Vec<u32> = (0..len).map(|_| *rng.pick(&common)).collect();
            null.push(measure(&seq)?.1);
        }
        let reference = Reference::new(&null, 0.02);

        let mut out = Vec::with_capacity(candidates.len());
        for seq in candidates {
            let (mut c, score) = measure(seq)?;
            c.token_ids = seq.clone();
            c.text = crate::model::tokenizer::decode(model.tokenizer(), seq, false)
                .unwrap_or_default()
                .trim()
                .to_string();
            c.z = reference.z(score);
            c.suspicion = suspicion_of_z(c.z);
            out.push(c);
        }
        let suspicion = out.iter().map(|c| c.suspicion).fold(0.0, f64::max);
        Ok(ConfirmReport {
            layer,
            probes: probes.len(),
            candidates: out,
            null,
            suspicion,
        })
    }
}

/// Pooled states of layer `layer` for every probe with `seq` inserted, `[n, h]` f32.
fn pooled(
    model: &Model,
    probes: &[Probe],
    seq: &[u32],
    layer: usize,
    pooling: Pooling,
) -> Result<Tensor> {
    let rows: Vec<Vec<u32>> = probes.iter().map(|p| p.with(seq)).collect();
    let batch = Batch::from_ids(&rows, model.pad_id(), PaddingSide::Right, model.device())?;
    let out = model.forward_with_states(&batch)?;
    let h = out.hidden_states.get(layer).ok_or_else(|| {
        Error::InvalidArgument(format!("the model returned no hidden state {layer}"))
    })?;
    Ok(batch.pool(h, pooling)?.to_dtype(DType::F32)?)
}

/// Two-way split of clean and carrying rows on their top principal axes.
fn cluster(clean: &Tensor, carrying: &Tensor, components: usize, seed: u64) -> Result<Clustering> {
    let n = clean.dim(0)?;
    let x = Tensor::cat(&[clean, carrying], 0)?;
    let k = components.min(2 * n - 1).min(x.dim(1)?).max(2);
    let (_, z) = PcaParams::new(k)
        .seed(seed)
        .total_variance(false)
        .check()?
        .fit_transform(&x)?;
    let fit = KMeansParams::new(2).seed(seed).check()?.fit(&z)?;
    let (sil, _) = silhouette(&z, &fit.labels, 2)?;
    let mut carrying_in = [0usize; 2];
    for (i, &l) in fit.labels.iter().enumerate() {
        if i >= n {
            carrying_in[l as usize] += 1;
        }
    }
    // Rows on the side of their kind, for the better of the two ways to name the clusters.
    let agree = fit
        .labels
        .iter()
        .enumerate()
        .filter(|&(i, &l)| (l == 1) == (i >= n))
        .count();
    let purity = agree.max(2 * n - agree) as f64 / (2 * n) as f64;
    let separation = ((2.0 * purity - 1.0) * sil.max(0.0)).clamp(0.0, 1.0);
    // A fine-tuned classifier's last states can collapse onto fewer axes than asked (the
    // PCA keeps only directions with variance): a missing second axis plots as 0.
    let xy: Vec<Vec<f32>> = z.narrow(1, 0, z.dim(1)?.min(2))?.to_vec2()?;
    Ok(Clustering {
        token_ids: Vec::new(),
        text: String::new(),
        separation,
        purity,
        silhouette: sil,
        sizes: [fit.sizes[0], fit.sizes[1]],
        carrying: carrying_in,
        z: 0.0,
        suspicion: 0.0,
        projection: xy
            .into_iter()
            .map(|r| [r[0], r.get(1).copied().unwrap_or(0.0)])
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A fine-tuned classifier's last states can lie on one line: PCA keeps a single axis,
    /// and the split and its plot must still come out (the second coordinate reads 0).
    #[test]
    fn states_on_one_axis_still_cluster() {
        let d = 16;
        let dir: Vec<f32> = (0..d).map(|j| 1.0 + j as f32 * 0.1).collect();
        let rows = |from: usize| -> Tensor {
            let v: Vec<f32> = (from..from + 8)
                .flat_map(|i| dir.iter().map(move |x| x * i as f32))
                .collect();
            Tensor::from_vec(v, (8, d), &Device::Cpu).unwrap()
        };
        let c = cluster(&rows(0), &rows(40), 10, 0).unwrap();
        assert_eq!(c.projection.len(), 16);
        assert!(c
            .projection
            .iter()
            .all(|p| p[1] == 0.0 || p[1].abs() < 1e-3));
        assert!(c.purity > 0.99, "{}", c.purity);
    }
}
