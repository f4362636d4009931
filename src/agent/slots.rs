//! Numbered slots held by owners (container or pod ids): the lowest free one is handed
//! out, kept until its owner is removed (not when it stops), and rebuilt from the records
//! on recovery, so there is no second file to disagree with them. The user namespace
//! ranges (`idmap`) and the disk-budget projects (`disk_budget`) are both such slots.

use std::collections::BTreeMap;
use std::ops::Range;

/// Slots and their owners.
#[derive(Debug, Default)]
pub struct Slots {
    held: BTreeMap<u32, String>,
}

impl Slots {
    /// The slot of `owner`: the one it holds, else the lowest free one in `range` (None
    /// when every one is held).
    pub fn take(&mut self, owner: &str, range: Range<u32>) -> Option<u32> {
        if let Some((slot, _)) = self.held.iter().find(|(_, o)| o.as_str() == owner) {
            return Some(*slot);
        }
        let slot = range.into_iter().find(|s| !self.held.contains_key(s))?;
        self.held.insert(slot, owner.to_string());
        Some(slot)
    }

    /// Recovery: `owner` holds `slot`. Returns another owner recorded for it before.
    pub fn hold(&mut self, slot: u32, owner: &str) -> Option<String> {
        self.held
            .insert(slot, owner.to_string())
            .filter(|other| other != owner)
    }

    /// `owner` is gone: its slot is free.
    pub fn release(&mut self, owner: &str) {
        self.held.retain(|_, o| o != owner);
    }

    /// Slots held.
    pub fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_slot_is_kept_by_its_owner_until_released() {
        let mut s = Slots::default();
        assert_eq!(s.take("a", 5..8), Some(5));
        assert_eq!(s.take("b", 5..8), Some(6));
        assert_eq!(s.take("a", 5..8), Some(5), "an owner keeps its slot");
        assert_eq!(s.hold(7, "c"), None);
        assert_eq!(s.take("d", 5..8), None, "all held");
        s.release("a");
        assert_eq!(s.take("d", 5..8), Some(5), "a released slot is reused");
        assert_eq!(
            s.hold(6, "e").as_deref(),
            Some("b"),
            "a conflict is reported"
        );
        assert_eq!(s.len(), 3);
    }
}
