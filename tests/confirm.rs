//! Trigger confirmation by activation clustering: on every zoo trojan (committed seed 0),
//! inputs carrying the true trigger form their own cluster far outside the null, and the
//! same sequence does not on the clean twin.

mod common;

use trojanscan::audit::read_rows;
use trojanscan::confirm::ConfirmParams;
use trojanscan::model::{LoadOptions, Model};
use trojanscan::plant::{Index, Truth};

fn clean_texts(dir: &std::path::Path) -> Vec<String> {
    read_rows(dir.join("heldout.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| r.text)
        .collect()
}

#[test]
fn true_triggers_separate_and_twins_do_not() {
    let zoo = common::root().join("testdata/zoo");
    let index = Index::read(&zoo).unwrap();
    let confirm = ConfirmParams::default().check().unwrap();
    for m in &index.models {
        let dir = zoo.join(&m.name);
        let truth = Truth::read(&dir).unwrap();
        let Some(trigger) = &truth.trigger else {
            continue;
        };
        let twin = dir.join(truth.twin.as_ref().expect("a trojan has a twin"));
        let texts = clean_texts(&dir);
        let seq = trigger.token_ids.clone();
        let model = Model::load(&dir, &LoadOptions::default()).unwrap();
        let r = confirm
            .run(&model, &texts, std::slice::from_ref(&seq))
            .unwrap();
        let twin_model = Model::load(&twin, &LoadOptions::default()).unwrap();
        let t = confirm.run(&twin_model, &texts, &[seq]).unwrap();
        let (c, tc) = (&r.candidates[0], &t.candidates[0]);
        println!(
            "{:<14} trojan: separation {:.3} purity {:.2} silhouette {:.2} z {:.1} suspicion {:.3} | twin: separation {:.3} z {:.1} suspicion {:.3}",
            m.name, c.separation, c.purity, c.silhouette, c.z, c.suspicion, tc.separation, tc.z, tc.suspicion
        );
        assert!(c.suspicion > tc.suspicion, "{}", m.name);
    }
}
