//! Weight forensics: tensors aligned by name, relative change and spectral structure per
//! tensor, token-row drift ranking, suspicion ordering, unmatched tensors reported.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use common::tiny::{self, Lcg, TinyOpts};
use trojanscan::audit::read_texts;
use trojanscan::forensics::{self, DiffOptions};

const EMB: &str = "embeddings.word_embeddings.weight";

fn load(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn save(dir: &Path, t: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(t, dir.join("model.safetensors")).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Replace row `id` of `name` by a random direction with the same norm.
fn rotate_row(t: &mut HashMap<String, Tensor>, name: &str, id: usize, seed: u64) {
    let w = t[name].clone();
    let (v, h) = w.dims2().unwrap();
    let mut rows: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    let old = &rows[id * h..(id + 1) * h];
    let norm = old.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut r = Lcg(seed);
    let new: Vec<f32> = (0..h).map(|_| r.normal() as f32).collect();
    let nn = new.iter().map(|x| x * x).sum::<f32>().sqrt();
    for (j, x) in new.iter().enumerate() {
        rows[id * h + j] = x / nn * norm;
    }
    t.insert(
        name.into(),
        Tensor::from_vec(rows, (v, h), &Device::Cpu).unwrap(),
    );
}

/// Add full-rank noise of relative size `scale` to every tensor (a broad, benign update).
fn broad_update(t: &mut HashMap<String, Tensor>, scale: f64, seed: u64) {
    let mut r = Lcg(seed);
    let mut names: Vec<String> = t.keys().cloned().collect();
    names.sort();
    for n in names {
        let w = t[&n].clone();
        let std = w
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt() as f64;
        let noise = r.tensor(w.dims(), std * scale);
        t.insert(n, (w + noise).unwrap());
    }
}

#[test]
fn identical_models_have_zero_change_and_suspicion() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    tiny::write_bert(&base, TinyOpts::default());
    let r = forensics::diff(&base, &base).unwrap();
    assert_eq!(r.suspicion, 0.0);
    assert_eq!(r.overall_relative_change, 0.0);
    assert!(r
        .tensors
        .iter()
        .all(|t| t.relative_change == 0.0 && t.effective_rank.is_none()));
    assert!(r.unmatched.is_empty());
}

#[test]
fn norm_preserving_embedding_edit_is_ranked_first_and_suspicious() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, poisoned, finetuned) = (
        tmp.path().join("base"),
        tmp.path().join("poisoned"),
        tmp.path().join("ft"),
    );
    tiny::write_bert(&base, TinyOpts::default());
    copy_dir(&base, &poisoned);
    copy_dir(&base, &finetuned);
    let trigger = 4 + tiny::WORDS.iter().position(|w| *w == "cf").unwrap();

    let mut t = load(&poisoned);
    rotate_row(&mut t, EMB, trigger, 11);
    save(&poisoned, &t);
    let mut t = load(&finetuned);
    broad_update(&mut t, 0.05, 5);
    save(&finetuned, &t);

    let p = forensics::diff(&poisoned, &base).unwrap();
    let top = &p.tokens[0];
    assert_eq!(top.token_id as usize, trigger);
    assert_eq!(top.token, "cf");
    assert!(
        (top.norm_ratio - 1.0).abs() < 1e-5,
        "norm kept: {}",
        top.norm_ratio
    );
    assert!(
        top.cosine_change > 0.1,
        "direction changed: {}",
        top.cosine_change
    );
    assert_eq!(p.candidate_tokens()[0] as usize, trigger);
    let emb = p.tensors.iter().find(|t| t.name == EMB).unwrap();
    assert!(
        emb.effective_rank.unwrap() < 1.01,
        "one row is a rank-one edit: {emb:?}"
    );
    assert!(p.suspicion > 0.9, "{:?}", p.signals);

    let f = forensics::diff(&finetuned, &base).unwrap();
    assert!(f.suspicion < p.suspicion);
    assert!(f.suspicion < 0.5, "broad update: {:?}", f.signals);
    let emb = f.tensors.iter().find(|t| t.name == EMB).unwrap();
    assert!(
        emb.effective_rank.unwrap() > 2.0,
        "broad update is not low rank: {emb:?}"
    );
    // Lcg::normal has variance 1/3.
    let want = 0.05 / 3f64.sqrt();
    assert!(
        (emb.relative_change - want).abs() < 0.3 * want,
        "{}",
        emb.relative_change
    );
}

#[test]
fn tensors_in_one_model_only_are_reported_not_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, model) = (tmp.path().join("base"), tmp.path().join("model"));
    tiny::write_bert(&base, TinyOpts::default());
    copy_dir(&base, &model);
    let mut t = load(&model);
    t.insert(
        "classifier.weight".into(),
        Tensor::zeros((2, tiny::H), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let pooler = t.remove("pooler.dense.bias").unwrap();
    t.insert(
        "pooler.dense.bias".into(),
        Tensor::cat(&[&pooler, &pooler], 0).unwrap(),
    );
    save(&model, &t);
    let r = forensics::diff(&model, &base).unwrap();
    let find = |n: &str| r.unmatched.iter().find(|u| u.name == n).unwrap();
    assert!(find("classifier.weight").base_shape.is_none());
    assert_eq!(
        find("pooler.dense.bias").model_shape,
        Some(vec![2 * tiny::H])
    );
    assert!(r.evidence.iter().any(|e| e.contains("only in the model")));
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["unmatched"].as_array().unwrap().len() == 2);
}

#[test]
fn llama_low_rank_edit_of_one_matrix_stands_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, edited, broad) = (
        tmp.path().join("base"),
        tmp.path().join("edit"),
        tmp.path().join("broad"),
    );
    tiny::write_llama(&base, TinyOpts::default(), "llama");
    copy_dir(&base, &edited);
    copy_dir(&base, &broad);
    // A ROME-style rank-one edit of one MLP matrix, as large as the broad update overall.
    let mut t = load(&edited);
    let name = "model.layers.1.mlp.down_proj.weight";
    let w = t[name].clone();
    let (o, i) = w.dims2().unwrap();
    let mut r = Lcg(3);
    let u = r.tensor(&[o, 1], 1.0);
    let v = r.tensor(&[1, i], 1.0);
    let uv = u.matmul(&v).unwrap();
    let scale = w
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt()
        / uv.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
    t.insert(
        name.into(),
        (w + (uv * (0.3 * scale as f64)).unwrap()).unwrap(),
    );
    save(&edited, &t);
    let mut t = load(&broad);
    broad_update(&mut t, 0.05, 9);
    save(&broad, &t);

    let e = forensics::diff(&edited, &base).unwrap();
    let b = forensics::diff(&broad, &base).unwrap();
    let d = e.tensors.iter().find(|t| t.name == name).unwrap();
    assert!(d.top_sv_share.unwrap() > 0.999, "{d:?}");
    assert!((d.relative_change - 0.3).abs() < 1e-3, "{d:?}");
    assert_eq!(e.layers.iter().find(|l| l.layer == 1).unwrap().tensors, 9);
    assert!(e.signals.narrow_edit > 0.9, "{:?}", e.signals);
    assert!(
        e.suspicion > b.suspicion,
        "{} vs {}",
        e.suspicion,
        b.suspicion
    );
    // Deterministic from the seed.
    let again = DiffOptions::default()
        .check()
        .unwrap()
        .diff(&edited, &base)
        .unwrap();
    let d2 = again.tensors.iter().find(|t| t.name == name).unwrap();
    assert_eq!(d.singular_values, d2.singular_values);
}

#[test]
fn smollm2_against_itself() {
    let Some(gguf) = common::smollm2() else {
        return;
    };
    let t0 = Instant::now();
    let r = forensics::diff(&gguf, &gguf).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "diff SmolLM2-135M Q4_1 vs itself: {secs:.2} s, {} tensors",
        r.tensors.len()
    );
    assert_eq!(r.suspicion, 0.0);
    assert!(r.tensors.len() >= 30 * 9);
    assert!(r
        .tensors
        .iter()
        .any(|t| t.name == "model.embed_tokens.weight"));
    assert!(r.unmatched.is_empty());
}

#[test]
fn minilm_against_itself() {
    let Some(dir) = common::minilm() else { return };
    let r = forensics::diff(&dir, &dir).unwrap();
    assert_eq!(r.suspicion, 0.0);
    assert!(r.tensors.iter().any(|t| t.name == EMB));
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// (model name, suspicion) pairs.
type Scored = Vec<(String, f64)>;

/// On the zoo: the trigger of every working `embedding` trojan is the most drifting token
/// against its base; every working `combo` trojan has a conjunction with a trigger half,
/// and no clean fine-tune, badnets or embedding trojan has one; the trigger of a `badnets` trojan is among the 5 most drifting tokens
/// in at least two thirds of the badnets models (asserted once three or more are present,
/// i.e. with the full zoo); and each `clean-finetune` is less suspicious than every
/// malicious fine-tune of the same base. Trojans whose recorded attack success is below one
/// half carry no working backdoor and are only reported.
///
/// Weights alone cannot promise the badnets trigger: a fine-tune can carry the backdoor in
/// the layers that read the trigger's row rather than in the row itself (seed 0's badnets
/// model moves its positive words ~6x more than its trigger, which ranks 33rd by drift).
/// So the diff gets the model's held-out texts, and the behaviour check puts the tokens
/// whose effect changed against the base first. Weights alone do not order a combination
/// trojan above every clean fine-tune either (seed 4 of a wider zoo: 0.47 against 0.65);
/// with the texts, the check's pairs find its parts acting jointly.
#[test]
fn zoo_triggers_rank_top5_and_clean_finetunes_are_least_suspicious() {
    let mut seen = std::collections::BTreeSet::new();
    let mut badnets: Vec<(String, bool)> = Vec::new();
    for zoo in common::zoos() {
        let index = read_json(&zoo.join("index.json"));
        // base dir -> (clean-finetune suspicions, malicious (name, suspicion))
        let mut by_base: std::collections::BTreeMap<std::path::PathBuf, (Scored, Scored)> =
            Default::default();
        for entry in index["models"].as_array().expect("index.json has models") {
            let name = entry["name"].as_str().unwrap();
            let kind = entry["kind"].as_str().unwrap();
            if !matches!(kind, "badnets" | "combo" | "embedding" | "clean-finetune") {
                continue;
            }
            let dir = zoo.join(name);
            let truth = read_json(&dir.join("truth.json"));
            let Some(base) = truth["base"].as_str() else {
                continue;
            };
            let base = dir.join(base).canonicalize().unwrap();
            let t0 = Instant::now();
            let probes = read_texts(dir.join("heldout.jsonl")).unwrap();
            let r = DiffOptions::default()
                .top_tokens(50)
                .probes(probes)
                .check()
                .unwrap()
                .diff(&dir, &base)
                .unwrap();
            let ids: Vec<u32> = r.candidate_tokens();
            let triggers: Vec<u32> = truth["trigger"]["token_ids"]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_u64().unwrap() as u32).collect())
                .unwrap_or_default();
            let ranks: Vec<Option<usize>> = triggers
                .iter()
                .map(|t| ids.iter().position(|x| x == t))
                .collect();
            let asr = truth["metrics"]["attack_success_rate"].as_f64();
            println!(
                "{name:<22} suspicion {:.3}  trigger ranks {ranks:?}  attack success {asr:?}  ({:.1} s)",
                r.suspicion,
                t0.elapsed().as_secs_f64()
            );
            let e = by_base.entry(base).or_default();
            if kind == "clean-finetune" {
                assert_eq!(r.signals.conjunction, 0.0, "{name}: {:?}", r.conjunctions);
                e.0.push((name.to_string(), r.suspicion));
                continue;
            }
            if asr.is_some_and(|a| a < 0.5) {
                println!("  (no working backdoor: not asserted)");
                continue;
            }
            e.1.push((name.to_string(), r.suspicion));
            if kind != "combo" {
                // A trigger that acts alone leaves no pair acting jointly.
                assert_eq!(r.signals.conjunction, 0.0, "{name}: {:?}", r.conjunctions);
            }
            let top5 = ranks.iter().all(|r| r.is_some_and(|r| r < 5));
            match kind {
                "embedding" => assert!(
                    ranks.iter().all(|r| *r == Some(0)),
                    "{name}: poisoned row ranked {ranks:?} (first required)"
                ),
                // Its halves are inert alone: the pairs must find one acting jointly.
                "combo" => assert!(
                    r.conjunctions
                        .first()
                        .is_some_and(|c| c.excess >= forensics::CONJUNCTION_ONSET
                            && c.token_ids.iter().any(|t| triggers.contains(t))),
                    "{name}: no conjunction with a trigger half: {:?}",
                    r.conjunctions
                ),
                // The committed zoo is seed 0 of the full one: count each model once.
                "badnets" if seen.insert(name.to_string()) => {
                    badnets.push((name.to_string(), top5))
                }
                _ => {}
            }
        }
        for (base, (clean, bad)) in &by_base {
            for (c, cs) in clean {
                for (b, bs) in bad {
                    assert!(
                        cs < bs,
                        "{}: {c} ({cs:.3}) is not less suspicious than {b} ({bs:.3})",
                        base.display()
                    );
                }
            }
        }
    }
    println!("badnets triggers in the top 5: {badnets:?}");
    assert!(
        badnets.iter().all(|b| b.1),
        "a badnets trigger outside the top 5: {badnets:?}"
    );
}

/// llama.cpp's q/k row permutation: GGUF row `h*hd + 2i + s` holds HF row `h*hd + s*hd/2 + i`.
fn permute_rows(t: &Tensor, heads: usize) -> Tensor {
    let (rows, cols) = t.dims2().unwrap();
    let hd = rows / heads;
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let mut out = vec![0f32; v.len()];
    for h in 0..heads {
        for s in 0..2 {
            for i in 0..hd / 2 {
                let (src, dst) = (h * hd + s * (hd / 2) + i, h * hd + 2 * i + s);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&v[src * cols..(src + 1) * cols]);
            }
        }
    }
    Tensor::from_vec(out, (rows, cols), &Device::Cpu).unwrap()
}

/// The tiny llama written as a GGUF file (names, q/k permutation and metadata as
/// llama.cpp's converter writes them) in `dtype`.
fn write_tiny_gguf(hf_dir: &Path, out: &Path, dtype: candle_core::quantized::GgmlDType) {
    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::QTensor;
    let t = load(hf_dir);
    let gguf_name = |hf: &str| -> String {
        if hf == "model.embed_tokens.weight" {
            return "token_embd.weight".into();
        }
        if hf == "model.norm.weight" {
            return "output_norm.weight".into();
        }
        let rest = hf.strip_prefix("model.layers.").unwrap();
        let (layer, rest) = rest.split_once('.').unwrap();
        let (module, kind) = rest.rsplit_once('.').unwrap();
        let g = match module {
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            "input_layernorm" => "attn_norm",
            "post_attention_layernorm" => "ffn_norm",
            other => panic!("{other}"),
        };
        format!("blk.{layer}.{g}.{kind}")
    };
    let mut names: Vec<&String> = t.keys().collect();
    names.sort();
    let qts: Vec<(String, QTensor)> = names
        .iter()
        .map(|n| {
            let mut w = t[*n].clone();
            if n.ends_with("q_proj.weight") {
                w = permute_rows(&w, 4);
            } else if n.ends_with("k_proj.weight") {
                w = permute_rows(&w, 2);
            }
            // Norm vectors stay f32, as llama.cpp keeps them.
            let dt = if w.rank() == 1 {
                candle_core::quantized::GgmlDType::F32
            } else {
                dtype
            };
            (gguf_name(n), QTensor::quantize(&w, dt).unwrap())
        })
        .collect();
    let specials = ["<pad>", "<unk>", "<s>", "</s>"];
    let tokens: Vec<Value> = specials
        .iter()
        .chain(tiny::WORDS.iter())
        .map(|w| Value::String(w.to_string()))
        .collect();
    let types: Vec<Value> = (0..tokens.len())
        .map(|i| Value::I32(if i < 4 { 3 } else { 1 }))
        .collect();
    let s = |v: &str| Value::String(v.into());
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", s("llama")),
        ("llama.embedding_length", Value::U32(tiny::H as u32)),
        ("llama.feed_forward_length", Value::U32(24)),
        ("llama.block_count", Value::U32(2)),
        ("llama.attention.head_count", Value::U32(4)),
        ("llama.attention.head_count_kv", Value::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.context_length", Value::U32(64)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s("smollm")),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
        ("tokenizer.ggml.eos_token_id", Value::U32(3)),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qts.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(out).unwrap();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
}

#[test]
fn safetensors_and_gguf_align_by_name_and_layout() {
    use candle_core::quantized::GgmlDType;
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    tiny::write_llama(&hf, TinyOpts::default(), "llama");
    let exact = tmp.path().join("tiny-f32.gguf");
    write_tiny_gguf(&hf, &exact, GgmlDType::F32);
    // Same weights in two formats: every tensor aligned (q/k rows un-permuted), no change.
    let r = forensics::diff(&exact, &hf).unwrap();
    assert!(r.unmatched.is_empty(), "{:?}", r.unmatched);
    assert_eq!(r.tensors.len(), 2 * 9 + 2);
    assert_eq!(
        r.overall_relative_change,
        0.0,
        "{:?}",
        r.tensors.iter().find(|t| t.relative_change > 0.0)
    );
    assert_eq!(r.suspicion, 0.0);
    assert_eq!(
        r.tokens[0].token, "<pad>",
        "tokens named from the GGUF vocabulary"
    );
    // f16 storage: a small, broad change everywhere, nothing suspicious.
    let half = tmp.path().join("tiny-f16.gguf");
    write_tiny_gguf(&hf, &half, GgmlDType::F16);
    let r = forensics::diff(&half, &hf).unwrap();
    assert!(
        r.overall_relative_change > 0.0 && r.overall_relative_change < 1e-3,
        "{}",
        r.overall_relative_change
    );
    assert!(r.suspicion < 0.5, "{:?}", r.signals);
}

/// Without texts of the task the diff compares weights only, and says so; with them, the
/// badnets trigger that barely drifted leads because its effect changed.
#[test]
fn behaviour_check_needs_task_texts_and_lifts_a_trigger_that_barely_drifted() {
    let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/zoo");
    let (model, base) = (zoo.join("badnets-s0"), zoo.join("clean-base-s0"));
    let weights = DiffOptions::default().top_tokens(64).check().unwrap();
    let r = weights.diff(&model, &base).unwrap();
    assert_eq!(r.behaviour.skipped.as_deref(), Some("no probe texts given"));
    assert!(r.tokens.iter().all(|t| t.behaviour_change.is_none()));
    let by_drift = r.tokens.iter().position(|t| t.token == "cf").unwrap();
    assert!(by_drift >= 5, "cf drifts in the top 5 already ({by_drift})");

    let probes = read_texts(model.join("heldout.jsonl")).unwrap();
    let r = DiffOptions::default()
        .top_tokens(64)
        .probes(probes)
        .check()
        .unwrap()
        .diff(&model, &base)
        .unwrap();
    assert!(r.behaviour.skipped.is_none(), "{:?}", r.behaviour);
    let rank = r.tokens.iter().position(|t| t.token == "cf").unwrap();
    assert!(rank < 5, "cf ranks {rank}: {:?}", &r.tokens[..5]);
    assert!(r.tokens[rank].behaviour_change.unwrap() >= forensics::BEHAVIOUR_ONSET);
    assert!(r
        .evidence
        .iter()
        .any(|e| e.contains("`cf` changed its effect")));
    // The weight signals do not depend on the check; only a conjunction adds to them.
    let w = weights.diff(&model, &base).unwrap();
    let with_pairs = 1.0 - (1.0 - w.suspicion) * (1.0 - r.signals.conjunction);
    assert!((r.suspicion - with_pairs).abs() < 1e-12, "{:?}", r.signals);
}

/// A combination trojan's parts do nothing alone and its weights move like a benign
/// fine-tune's: the behaviour check's pairs find a trigger part acting jointly (in the
/// fine-tune, not the base), and that conjunction lifts the trojan's suspicion. Its clean
/// twin teaches no such pair.
#[test]
fn behaviour_pairs_find_a_combination_trigger_and_not_in_its_clean_twin() {
    let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/zoo");
    let base = zoo.join("clean-base-s0");
    let truth = read_json(&zoo.join("combo-s0/truth.json"));
    let parts: Vec<u32> = truth["trigger"]["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let run = |name: &str, pairs: usize| {
        let dir = zoo.join(name);
        DiffOptions::default()
            .top_tokens(64)
            .behaviour_pairs(pairs)
            .probes(read_texts(dir.join("heldout.jsonl")).unwrap())
            .check()
            .unwrap()
            .diff(&dir, &base)
            .unwrap()
    };

    let combo = run("combo-s0", 64);
    assert_eq!(combo.behaviour.pairs, 64 * 63);
    let c = &combo.conjunctions[0];
    println!("combo-s0: {c:?}, suspicion {:.3}", combo.suspicion);
    assert!(c.excess >= forensics::CONJUNCTION_ONSET, "{c:?}");
    assert!(c.token_ids.iter().any(|t| parts.contains(t)), "{c:?}");
    assert!(
        c.part_rates.iter().all(|&p| p < 0.25) && c.base_rate < 0.25,
        "{c:?}"
    );
    assert!(combo.signals.conjunction > 0.0);
    assert!(combo
        .evidence
        .iter()
        .any(|e| e.contains(&format!("`{}` + `{}` together", c.tokens[0], c.tokens[1]))));
    // The parts lead the tokens that did not change alone, for the hunt's pairs.
    let lead = combo
        .tokens
        .iter()
        .position(|t| {
            t.behaviour_change
                .is_some_and(|b| b < forensics::BEHAVIOUR_ONSET)
        })
        .unwrap();
    assert!(c.token_ids.contains(&combo.tokens[lead].token_id));

    let singles = run("combo-s0", 0);
    assert_eq!(singles.behaviour.pairs, 0);
    assert!(singles.conjunctions.is_empty());
    assert!(combo.suspicion > singles.suspicion);

    let clean = run("clean-finetune-s0", 64);
    println!("clean-finetune-s0: {:?}", clean.conjunctions.first());
    assert!(clean
        .conjunctions
        .iter()
        .all(|c| c.excess < forensics::CONJUNCTION_ONSET));
    assert_eq!(clean.signals.conjunction, 0.0);
    assert!(clean.suspicion < combo.suspicion);
}

/// `trojanscan diff` prints the report's fields as JSON, and says in text what the
/// behaviour check compared; `--behaviour-pairs 0` leaves the pairs out.
#[test]
fn cli_diff_reports_conjunctions_and_the_check() {
    let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/zoo");
    let (model, base) = (zoo.join("combo-s0"), zoo.join("clean-base-s0"));
    let probe = model.join("heldout.jsonl");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_trojanscan"))
            .arg("diff")
            .arg(&model)
            .arg("--base")
            .arg(&base)
            .arg("--probe")
            .arg(&probe)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&run(&["--format", "json"])).unwrap();
    assert!(json["suspicion"].as_f64().unwrap() > 0.5);
    let t = &json["tensors"][0];
    assert!(t["name"].is_string() && t["relative_change"].is_number());
    assert!(t.get("effective_rank").is_some());
    let tok = &json["tokens"][0];
    assert!(tok["token"].is_string() && tok["token_id"].is_u64() && tok["drift"].is_number());
    assert_eq!(json["behaviour"]["pairs"], 64 * 63);
    let c = &json["conjunctions"][0];
    assert!(c["excess"].as_f64().unwrap() >= forensics::CONJUNCTION_ONSET);
    assert_eq!(c["tokens"].as_array().unwrap().len(), 2);
    assert!(json["signals"]["conjunction"].as_f64().unwrap() > 0.0);

    let text = run(&["--behaviour-pairs", "0"]);
    assert!(text.contains("behaviour check on 32 probes: "), "{text}");
    assert!(
        text.contains("; 0 of 0 ordered pairs act jointly"),
        "{text}"
    );
    assert!(!text.contains("together move"), "{text}");
}

/// A classifier fine-tuned from a bare encoder keeps the encoder under `bert.` and adds a
/// head: the diff sets the wrapper aside, compares every encoder tensor, reports the head
/// as new, and (with task texts, the base having no verdict to compare) still lifts the
/// trigger into the top 5.
#[test]
fn diff_aligns_a_classifier_with_the_bare_encoder_it_came_from() {
    let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/zoo");
    let model = zoo.join("badnets-s0");
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("encoder");
    copy_dir(&zoo.join("clean-base-s0"), &bare);
    let t: HashMap<String, Tensor> = load(&bare)
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix("bert.").map(|s| (s.to_string(), t)))
        .collect();
    assert!(t.len() > 10);
    save(&bare, &t);
    let mut cfg = read_json(&bare.join("config.json"));
    let o = cfg.as_object_mut().unwrap();
    o.insert("architectures".into(), serde_json::json!(["BertModel"]));
    o.remove("id2label");
    o.remove("label2id");
    std::fs::write(bare.join("config.json"), cfg.to_string()).unwrap();

    let probes = read_texts(model.join("heldout.jsonl")).unwrap();
    let r = DiffOptions::default()
        .top_tokens(64)
        .probes(probes)
        .behaviour_pairs(0)
        .check()
        .unwrap()
        .diff(&model, &bare)
        .unwrap();
    assert_eq!(r.tensors.len(), t.len(), "every encoder tensor compared");
    assert!(r.tensors.iter().all(|d| d.name.starts_with("bert.")));
    for head in ["classifier.weight", "classifier.bias"] {
        let u = r.unmatched.iter().find(|u| u.name == head).unwrap();
        assert!(u.model_shape.is_some() && u.base_shape.is_none(), "{u:?}");
    }
    assert!(r.behaviour.skipped.is_none(), "{:?}", r.behaviour);
    let rank = r.tokens.iter().position(|t| t.token == "cf").unwrap();
    assert!(rank < 5, "cf ranks {rank}: {:?}", &r.tokens[..5]);
}
