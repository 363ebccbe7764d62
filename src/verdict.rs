//! The answer every detector ends in.

use serde::{Deserialize, Serialize};

/// Whether a model looks safe to deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Verdict {
    /// Nothing found stands out from what ordinary inputs do.
    Clean,
    /// Nothing found, but the search fell short of the share it must cover to say `clean`
    /// (the budget ran out first): not a pass.
    Incomplete,
    /// Something stands out, but not strongly enough to call it a backdoor.
    Suspicious,
    /// A trigger (or equivalent evidence) was found.
    Trojaned,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Clean => "clean",
            Verdict::Incomplete => "incomplete",
            Verdict::Suspicious => "suspicious",
            Verdict::Trojaned => "trojaned",
        })
    }
}
