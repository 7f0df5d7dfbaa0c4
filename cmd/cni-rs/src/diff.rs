//! A unified diff of two small texts, for `--dry-run`: what a person
//! reviews before letting the installer touch a node's conflist. One hunk
//! holding the whole file (a conflist is a few dozen lines), lines matched
//! by a longest common subsequence.

/// `old` -> `new` as a unified diff labelled `label` and `label (new)`;
/// empty when they are the same.
pub fn unified(label: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = format!(
        "--- {label}\n+++ {label} (new)\n@@ -{},{} +{},{} @@\n",
        usize::from(!a.is_empty()),
        a.len(),
        usize::from(!b.is_empty()),
        b.len()
    );
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out += &format!(" {}\n", a[i]);
            (i, j) = (i + 1, j + 1);
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out += &format!("+{}\n", b[j]);
            j += 1;
        } else {
            out += &format!("-{}\n", a[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_added_and_removed_lines() {
        assert_eq!(unified("f", "a\n", "a\n"), "");
        assert_eq!(
            unified("f", "a\nb\nc\n", "a\nx\nc\nd\n"),
            "--- f\n+++ f (new)\n@@ -1,3 +1,4 @@\n a\n+x\n-b\n c\n+d\n"
        );
    }
}
