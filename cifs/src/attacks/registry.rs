//! A name on the command line to its attack, through `crate::attacks::ATTACKS` (attacks/mod.rs:
//! one line per attack). A new attack is its own file implementing [`Attack`] and one line
//! there.

use std::sync::Arc;

use crate::attacks::attack::Attack;
use crate::attacks::ATTACKS;

/// The attack `name` names (`pgd20`, `autoattack`, ...).
pub fn parse(name: &str) -> Result<Arc<dyn Attack>, String> {
    let name = name.trim();
    ATTACKS.iter().find_map(|e| (e.parse)(name)).ok_or_else(|| {
        let known: Vec<&str> = ATTACKS.iter().map(|e| e.name).collect();
        format!("unknown attack `{name}` (use {})", known.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attack_parses_from_its_name_and_names_itself_so() {
        for e in ATTACKS {
            let name = e.name.replace("<steps>", "7");
            assert_eq!(parse(&name).unwrap_or_else(|err| panic!("{err}")).name(), name);
        }
        for bad in ["pgd0", "pgd", "cwx", "fab", "autoattack2"] {
            assert!(parse(bad).unwrap_err().contains(&format!("unknown attack `{bad}`")), "{bad}");
        }
    }
}
