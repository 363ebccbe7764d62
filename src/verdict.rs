//! The three-way answer every detector ends in.

use serde::{Deserialize, Serialize};

/// Whether a model looks safe to deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Verdict {
    /// Nothing found stands out from what ordinary inputs do.
    Clean,
    /// Something stands out, but not strongly enough to call it a backdoor.
    Suspicious,
    /// A trigger (or equivalent evidence) was found.
    Trojaned,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Clean => "clean",
            Verdict::Suspicious => "suspicious",
            Verdict::Trojaned => "trojaned",
        })
    }
}
