//! Random readable run names (`adjective-noun-NNN`), as MLflow gives runs that were
//! created without one.

const ADJECTIVES: &[&str] = &[
    "able", "bold", "brave", "bright", "calm", "clever", "crisp", "dapper", "eager", "fair",
    "gentle", "glad", "grand", "honest", "jolly", "keen", "kind", "lively", "lucky", "merry",
    "mighty", "neat", "nimble", "polite", "proud", "quick", "quiet", "rare", "sharp", "shy",
    "silent", "smart", "stately", "steady", "sunny", "swift", "tidy", "vivid", "warm", "wise",
];

const NOUNS: &[&str] = &[
    "ant", "bass", "bat", "bear", "bee", "carp", "cat", "colt", "crab", "crow", "deer", "doe",
    "dove", "eel", "elk", "fawn", "finch", "fish", "fox", "frog", "goat", "gull", "hare", "hawk",
    "hen", "jay", "koi", "lamb", "lark", "mole", "moth", "mule", "newt", "owl", "ox", "pig", "ram",
    "seal", "slug", "toad", "wasp", "whale", "wolf", "worm", "wren", "yak",
];

/// A fresh name such as `bold-cat-42`, at most 20 characters.
pub(crate) fn random_run_name() -> String {
    let r = uuid::Uuid::new_v4();
    let b = r.as_bytes();
    let adj = ADJECTIVES[usize::from(b[0]) % ADJECTIVES.len()];
    let noun = NOUNS[usize::from(b[1]) % NOUNS.len()];
    let n = u16::from_le_bytes([b[2], b[3]]) % 1000;
    format!("{adj}-{noun}-{n}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_short_and_readable() {
        for _ in 0..200 {
            let n = super::random_run_name();
            assert!(n.len() <= 20, "{n}");
            assert_eq!(n.split('-').count(), 3, "{n}");
        }
    }
}
