//! SQL `LIKE`: `%` matches any run of characters, `_` any one character, everything
//! else itself (case-sensitive, as MLflow's SQL stores configure it). Linear-time
//! matching with one backtrack point, so no pattern can make it blow up.

pub(crate) struct Pattern {
    chars: Vec<char>,
    /// Whether every character of the pattern is ASCII (then ASCII texts match bytewise).
    ascii: bool,
}

impl Pattern {
    pub(crate) fn new(pattern: &str, case_insensitive: bool) -> Self {
        let p = if case_insensitive {
            pattern.to_lowercase()
        } else {
            pattern.to_string()
        };
        Pattern {
            ascii: p.is_ascii(),
            chars: p.chars().collect(),
        }
    }

    pub(crate) fn matches(&self, text: &str, case_insensitive: bool) -> bool {
        // Names and tags are nearly always ASCII: match their bytes in place, lowering
        // case as they are read, instead of collecting characters (a search walks every
        // name of an experiment through here).
        if self.ascii && text.is_ascii() {
            let t = text.as_bytes();
            let at = |i: usize| {
                if case_insensitive {
                    char::from(t[i].to_ascii_lowercase())
                } else {
                    char::from(t[i])
                }
            };
            return self.walk(t.len(), at);
        }
        let t: Vec<char> = if case_insensitive {
            text.to_lowercase().chars().collect()
        } else {
            text.chars().collect()
        };
        self.walk(t.len(), |i| t[i])
    }

    /// The match itself, over a text of `len` characters read through `at`.
    fn walk(&self, len: usize, at: impl Fn(usize) -> char) -> bool {
        let p = &self.chars;
        let (mut ti, mut pi) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < len {
            if pi < p.len() && (p[pi] == '_' || (p[pi] != '%' && p[pi] == at(ti))) {
                ti += 1;
                pi += 1;
            } else if pi < p.len() && p[pi] == '%' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '%')
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn like(p: &str, t: &str) -> bool {
        Pattern::new(p, false).matches(t, false)
    }

    #[test]
    fn sql_like_semantics() {
        assert!(like("%child_1%", "root/child_1/x"));
        assert!(like("a_c", "abc"));
        assert!(!like("a_c", "abbc"));
        assert!(like("%", ""));
        assert!(!like("abc", "ABC"));
        assert!(Pattern::new("ABC%", true).matches("abcdef", true));
        assert!(like("%a%b%c%", "xxaxxbxxcxx"));
        assert!(!like("%a%b%c%d", "xxaxxbxxcxx"));
        // Adversarial: many stars against a long text stays fast (linear backtracking).
        let text = "a".repeat(5000);
        assert!(!like(&format!("{}b", "%a".repeat(100)), &text));
        assert!(like(&format!("{}%", "%a".repeat(100)), &text));
    }

    /// ASCII texts are matched on bytes, others on characters: both agree with SQL.
    #[test]
    fn ascii_and_unicode_texts() {
        let ilike = |p: &str, t: &str| Pattern::new(p, true).matches(t, true);
        assert!(ilike("%CHILD_1%", "Root/Child-1/x"));
        assert!(!ilike("%child_1", "root/child_12"));
        assert!(ilike("%école%", "L'ÉCOLE"));
        assert!(!like("%école%", "L'ÉCOLE"));
        // `_` is one character, however many bytes it takes.
        assert!(like("a_c", "aéc"));
        assert!(!like("a__c", "aéc"));
        assert!(like("é%", "été"));
        assert!(!like("é%", "ete"));
    }
}
