//! SQL `LIKE`: `%` matches any run of characters, `_` any one character, everything
//! else itself (case-sensitive, as MLflow's SQL stores configure it). Linear-time
//! matching with one backtrack point, so no pattern can make it blow up.

pub(crate) struct Pattern {
    chars: Vec<char>,
}

impl Pattern {
    pub(crate) fn new(pattern: &str, case_insensitive: bool) -> Self {
        let p = if case_insensitive {
            pattern.to_lowercase()
        } else {
            pattern.to_string()
        };
        Pattern {
            chars: p.chars().collect(),
        }
    }

    pub(crate) fn matches(&self, text: &str, case_insensitive: bool) -> bool {
        let t: Vec<char> = if case_insensitive {
            text.to_lowercase().chars().collect()
        } else {
            text.chars().collect()
        };
        let p = &self.chars;
        let (mut ti, mut pi) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == '_' || (p[pi] != '%' && p[pi] == t[ti])) {
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
}
