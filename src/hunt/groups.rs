//! Group screening: single-token candidates inserted several at a time into one probe
//! row, and the groups that move the model split in halves until one token is left.
//!
//! Why: a decoder's chat probe row is some 60 tokens of forward pass, and screening each
//! candidate alone on [`HuntParams::screen_rows`] rows reached 0.4% of a 32 000-token
//! vocabulary in a 4 000-row hunt. A trigger that acts alone also acts beside a few
//! unrelated words, so one row can screen [`HuntParams::group_size`] tokens at once. The
//! groups are ranked by what they do to [`HuntParams::group_rows`] rows; the best are
//! bisected (both halves measured, the one that moves the model more kept) down to one
//! token, which is then screened alone like any other candidate. A token screened only
//! inside a group that was never bisected counts as screened with nothing found.

use super::objective::{Effect, Evaluator, Objective};
use super::propose::take_turns;
use super::{Clock, Found, HuntParams, Source};
use crate::progress::Progress;
use crate::Result;
use std::collections::{HashMap, HashSet};

/// Whether the sweep may screen a candidate inside a group: single tokens the hunt
/// proposed or swept. The user's candidates and forensics hints are measured alone, as
/// named, and so are sequences.
fn groupable(seq: &[u32], source: Source) -> bool {
    seq.len() == 1 && matches!(source, Source::Gradient | Source::Embedding | Source::Sweep)
}

/// One screening unit: a candidate alone, or a group of candidates (indices into the
/// items).
#[derive(Debug, PartialEq)]
enum Unit {
    Alone(usize),
    Group(Vec<usize>),
}

/// The items' screening units in order: groupable items fill groups of `size` as they
/// come, the others stand alone between them.
fn units(items: &[(Vec<u32>, Source)], size: usize) -> Vec<Unit> {
    let mut out = Vec::new();
    let mut open = Vec::with_capacity(size);
    for (i, (seq, source)) in items.iter().enumerate() {
        if size > 1 && groupable(seq, *source) {
            open.push(i);
            if open.len() == size {
                out.push(Unit::Group(std::mem::take(&mut open)));
            }
        } else {
            out.push(Unit::Alone(i));
        }
    }
    if !open.is_empty() {
        out.push(Unit::Group(open));
    }
    out
}

/// What group screening covered.
pub(super) struct Screened {
    /// Units screened (a group counts once) before the clock ran out...
    pub units: usize,
    /// ... of this many.
    pub of: usize,
    /// Candidates screened inside a group and never alone...
    pub only_in_groups: usize,
    /// ... and those a split led to and screened alone.
    pub split_to: usize,
    /// Groups screened...
    pub groups: usize,
    /// ... and splits down to one token (a classifier's group may be split once per label
    /// it moved to).
    pub bisected: usize,
    /// Groups that took over some probe row (for objectives without rows taken over:
    /// any group) but were not bisected before the budget ran out: what the sweep left
    /// unexamined.
    pub unsplit_movers: usize,
}

/// The rows and budget shares one group screening runs under.
pub(super) struct Plan<'a> {
    /// Rows a candidate alone is screened on.
    pub screen: &'a [usize],
    /// Rows a group (and each half while bisecting) is screened on.
    pub coarse: &'a [usize],
    /// Candidates per group.
    pub size: usize,
    /// Groups are screened until this share of the budget is spent...
    pub groups_until: f64,
    /// ... and bisected, best first, until this one.
    pub bisect_until: f64,
}

/// Screen `items` (candidates alone on `plan.screen`, groupable ones in groups on
/// `plan.coarse`), then bisect the groups best first; every candidate measured alone goes
/// to `out`.
pub(super) fn screen(
    ev: &Evaluator,
    p: &HuntParams,
    clock: &Clock,
    plan: &Plan,
    items: &[(Vec<u32>, Source)],
    out: &mut Vec<Found>,
    progress: &dyn Progress,
) -> Result<Screened> {
    let units = units(items, plan.size);
    let found = |i: usize, effect: Effect| Found {
        seq: items[i].0.clone(),
        effect,
        source: items[i].1,
    };
    // Screening: about a batch of rows at a time, the clock checked between. A
    // classifier's group is measured toward every label (see
    // [`Evaluator::evaluate_each_target`]), once per label in `groups`.
    let mut groups: Vec<(Vec<usize>, Effect)> = Vec::new();
    let mut screened_groups = 0;
    let mut in_groups = 0;
    let mut done = 0;
    while done < units.len() && !clock.past(plan.groups_until) {
        let (mut alone, mut grouped, mut rows) = (Vec::new(), Vec::new(), 0);
        // Whole units up to a batch (at least one).
        while let Some(unit) = units.get(done) {
            let cost = match unit {
                Unit::Alone(_) => plan.screen.len(),
                Unit::Group(_) => plan.coarse.len(),
            };
            if rows > 0 && rows + cost > p.batch_rows {
                break;
            }
            match unit {
                Unit::Alone(i) => alone.push(*i),
                Unit::Group(g) => grouped.push(g.clone()),
            }
            rows += cost;
            done += 1;
        }
        let seqs: Vec<Vec<u32>> = alone.iter().map(|&i| items[i].0.clone()).collect();
        let eff = ev.evaluate_with(&seqs, Some(plan.screen), None)?.0;
        out.extend(alone.iter().zip(eff).map(|(&i, e)| found(i, e)));
        let seqs: Vec<Vec<u32>> = grouped.iter().map(|g| joined(items, g)).collect();
        let eff = ev.evaluate_each_target(&seqs, plan.coarse)?;
        let members = grouped.iter().map(Vec::len).sum::<usize>();
        in_groups += members;
        screened_groups += grouped.len();
        for (g, each) in grouped.into_iter().zip(eff) {
            groups.extend(each.into_iter().map(|e| (g.clone(), e)));
        }
        progress.advance((alone.len() + members) as u64);
    }
    // Bisection, best groups first (a classifier's labels taking turns), a few at a time
    // so that every level of halves runs as one batch and the clock is checked about once
    // a batch of rows. Where rows are taken over (a label, a next token), a group that
    // took over none holds no trigger that acts alone and is not split; other objectives
    // have no such test, and every group is a candidate for splitting.
    groups.sort_by(|a, b| b.1.cmp(&a.1));
    let counts_rows = matches!(ev.objective, Objective::Classifier | Objective::NextToken);
    let movers = groups
        .iter()
        .take_while(|(_, e)| !counts_rows || e.hits > 0)
        .count();
    // A classifier's labels take turns (see [`target_turns`]); a decoder's groups go
    // best first.
    let labels = ev.objective == Objective::Classifier;
    let order: Vec<usize> = if labels {
        target_turns(&groups[..movers])
    } else {
        (0..movers).collect()
    };
    let levels = plan.size.next_power_of_two().trailing_zeros() as usize;
    let cost = 2 * levels * plan.coarse.len() + plan.screen.len();
    let per_round = (p.batch_rows / cost.max(1)).max(1);
    let mut bisected = 0;
    let mut alone: HashSet<usize> = HashSet::new();
    for round in order.chunks(per_round) {
        if clock.past(plan.bisect_until) {
            break;
        }
        let mut left: Vec<Vec<usize>> = round.iter().map(|&k| groups[k].0.clone()).collect();
        // A classifier's group is split toward the label it moved to (a decoder's has one
        // effect per half, its best: see `toward_each`).
        let toward: Vec<Option<u32>> = round.iter().map(|&k| groups[k].1.target).collect();
        while left.iter().any(|g| g.len() > 1) {
            let halves: Vec<Vec<usize>> = left
                .iter()
                .filter(|g| g.len() > 1)
                .flat_map(|g| {
                    let (a, b) = g.split_at(g.len() / 2);
                    [a.to_vec(), b.to_vec()]
                })
                .collect();
            let targets: Vec<Option<u32>> = left
                .iter()
                .zip(&toward)
                .filter(|(g, _)| g.len() > 1)
                .flat_map(|(_, &t)| [t, t])
                .collect();
            let eff = toward_each(ev, plan.coarse, items, &halves, &targets)?;
            let mut k = 0;
            for g in left.iter_mut().filter(|g| g.len() > 1) {
                *g = if eff[k + 1].better_than(&eff[k]) {
                    halves[k + 1].clone()
                } else {
                    halves[k].clone()
                };
                k += 2;
            }
        }
        // A token the split of another label's group already measured is not measured
        // again.
        let last: Vec<usize> = left
            .iter()
            .map(|g| g[0])
            .filter(|&i| alone.insert(i))
            .collect();
        let seqs: Vec<Vec<u32>> = last.iter().map(|&i| items[i].0.clone()).collect();
        let eff = ev.evaluate_with(&seqs, Some(plan.screen), None)?.0;
        out.extend(last.iter().zip(eff).map(|(&i, e)| found(i, e)));
        bisected += round.len();
    }
    Ok(Screened {
        units: done,
        of: units.len(),
        only_in_groups: in_groups - alone.len(),
        split_to: alone.len(),
        groups: screened_groups,
        bisected,
        unsplit_movers: movers - bisected,
    })
}

/// The effects of `halves` on `rows`, each toward its target (its best one where `None`),
/// from one batch: every level of halves stays one pass, whatever labels they aim at.
fn toward_each(
    ev: &Evaluator,
    rows: &[usize],
    items: &[(Vec<u32>, Source)],
    halves: &[Vec<usize>],
    targets: &[Option<u32>],
) -> Result<Vec<Effect>> {
    let seqs: Vec<Vec<u32>> = halves.iter().map(|h| joined(items, h)).collect();
    let each = ev.evaluate_each_target(&seqs, rows)?;
    Ok(each
        .into_iter()
        .zip(targets)
        .map(|(e, t)| match t {
            // A classifier's effects are one per label, in label order.
            Some(l) if e.len() > 1 && (*l as usize) < e.len() => e[*l as usize],
            _ => e[0],
        })
        .collect())
}

/// The order in which `sorted` groups (best first) are split: the targets they drive to
/// take turns, each target's groups best first. A trigger drives to one label, and on a
/// sentiment classifier the task's words of one polarity would fill the first places of
/// one ranking.
fn target_turns(sorted: &[(Vec<usize>, Effect)]) -> Vec<usize> {
    let mut slot: HashMap<Option<u32>, usize> = HashMap::new();
    let mut rankings: Vec<Vec<usize>> = Vec::new();
    for (i, (_, e)) in sorted.iter().enumerate() {
        let k = *slot.entry(e.target).or_insert_with(|| {
            rankings.push(Vec::new());
            rankings.len() - 1
        });
        rankings[k].push(i);
    }
    take_turns(&rankings).into_iter().map(|(i, _)| i).collect()
}

/// The tokens of items `members`, in order, as one inserted sequence.
fn joined(items: &[(Vec<u32>, Source)], members: &[usize]) -> Vec<u32> {
    members.iter().flat_map(|&i| items[i].0.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hunt::probes::{build, Insertion, Probe};
    use crate::hunt::vocab::Vocab;
    use crate::hunt::{screen_rows, Order};
    use crate::model::{LoadOptions, Model, Precision};
    use crate::progress::NoProgress;
    use std::time::{Duration, Instant};

    /// The zoo's `badnets-s0` (a single-token trigger toward one label), probed with texts
    /// of the other label, and 64 rare tokens with the trigger 30th.
    fn planted() -> (Model, Vec<Probe>, u32, Order) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/zoo/badnets-s0");
        let model = Model::load(&dir, &LoadOptions::with_precision(Precision::F32)).unwrap();
        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap();
        let trigger = truth["trigger"]["token_ids"][0].as_u64().unwrap() as u32;
        let target = truth["target"]["label"].as_str().unwrap().to_owned();
        let texts: Vec<String> = std::fs::read_to_string(dir.join("heldout.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["label"] != target.as_str())
            .map(|v| v["text"].as_str().unwrap().to_owned())
            .take(8)
            .collect();
        let vocab = Vocab::new(&model);
        let probes = build(&model, &vocab, &texts, &[Insertion::Random], 4, 0, None).unwrap();
        let mut items: Order = vocab
            .by_rarity()
            .into_iter()
            .filter(|&t| t != trigger)
            .take(63)
            .map(|t| (vec![t], Source::Sweep))
            .collect();
        items.insert(29, (vec![trigger], Source::Sweep));
        (model, probes, trigger, items)
    }

    /// Screens `items` in groups of 8 on 2 rows, bisecting on 2 rows and screening
    /// alone on 8, under a row cap; returns what was covered and measured alone.
    fn run(
        model: &Model,
        probes: Vec<Probe>,
        items: &[(Vec<u32>, Source)],
        batch_rows: usize,
        rows_cap: Option<u64>,
    ) -> (Screened, Vec<Found>) {
        let ev = Evaluator::new(model, Objective::Classifier, probes, vec![], 256).unwrap();
        let screen = screen_rows(ev.clean_predictions(), ev.width(), 1, 8);
        let coarse = screen_rows(ev.clean_predictions(), ev.width(), 1, 2);
        let clock = Clock {
            start: Instant::now(),
            budget: Duration::from_secs(3600),
            rows_cap,
            rows: &ev.rows_run,
        };
        let plan = Plan {
            screen: &screen,
            coarse: &coarse,
            size: 8,
            groups_until: 1.0,
            bisect_until: 1.0,
        };
        let p = HuntParams {
            batch_rows,
            ..HuntParams::default()
        };
        let mut out = Vec::new();
        let s = super::screen(&ev, &p, &clock, &plan, items, &mut out, &NoProgress).unwrap();
        (s, out)
    }

    /// A planted single-token trigger hidden in one of eight groups: bisection follows it
    /// down to its token, and every candidate is counted once, alone or in a group.
    #[test]
    fn bisection_follows_a_planted_trigger_down_to_its_token() {
        let (model, probes, trigger, items) = planted();
        let (s, out) = run(&model, probes, &items, 256, None);
        assert_eq!((s.units, s.of, s.groups), (8, 8, 8));
        assert_eq!(s.unsplit_movers, 0, "ample budget splits every mover");
        assert_eq!(out.len() + s.only_in_groups, items.len());
        let best = out
            .iter()
            .max_by(|a, b| a.effect.score.total_cmp(&b.effect.score))
            .unwrap();
        assert_eq!(best.seq, vec![trigger], "bisection lost the trigger");
        assert!(best.effect.score >= 0.5, "{:?}", best.effect);
    }

    /// With rows for one bisection only, the group that moves the model most is the one
    /// split, and the movers left unsplit are counted.
    #[test]
    fn a_short_budget_splits_the_strongest_group_first() {
        let (model, probes, trigger, items) = planted();
        // 8 groups on 2 rows (16), then one group split: 2·3·2 + 8 = 20 rows.
        let (s, out) = run(&model, probes, &items, 16, Some(30));
        assert_eq!((s.units, s.groups, s.bisected), (8, 8, 1));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].seq, vec![trigger]);
        assert_eq!(s.only_in_groups, items.len() - 1);
    }

    /// Groups driving to the label that the task's words fill a ranking with wait their
    /// turn: the other label's best is split second, not last.
    #[test]
    fn labels_take_turns_when_groups_are_split() {
        let e = |score: f64, target: u32| Effect {
            score,
            detail: 0.0,
            target: Some(target),
            hits: 1,
            trials: 3,
        };
        let sorted: Vec<(Vec<usize>, Effect)> = [(1.0, 0), (0.9, 0), (0.8, 0), (0.7, 1), (0.6, 1)]
            .into_iter()
            .enumerate()
            .map(|(i, (score, t))| (vec![i], e(score, t)))
            .collect();
        assert_eq!(target_turns(&sorted), vec![0, 3, 1, 4, 2]);
        assert!(target_turns(&[]).is_empty());
    }

    #[test]
    fn units_group_proposed_single_tokens_and_leave_named_ones_alone() {
        let items: Vec<(Vec<u32>, Source)> = vec![
            (vec![1], Source::User),
            (vec![2], Source::Gradient),
            (vec![3, 4], Source::Hint),
            (vec![5], Source::Embedding),
            (vec![6], Source::Sweep),
            (vec![7], Source::Hint),
            (vec![8], Source::Sweep),
        ];
        assert_eq!(
            units(&items, 2),
            vec![
                Unit::Alone(0),
                Unit::Alone(2),
                Unit::Group(vec![1, 3]),
                Unit::Alone(5),
                Unit::Group(vec![4, 6]),
            ]
        );
        let alone: Vec<Unit> = (0..items.len()).map(Unit::Alone).collect();
        assert_eq!(units(&items, 1), alone);
    }
}
