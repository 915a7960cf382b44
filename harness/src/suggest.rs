//! "Did you mean …?": the closest known name to a misspelt one. A leaf module: the
//! scenario model, the policy and the CLI all suggest names the same way.

/// The candidate nearest to `word` by edit distance (case-insensitive), if it is near
/// enough to be a plausible misspelling: at most a third of the word's length, and at
/// least one edit allowed.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (distance(&word.to_lowercase(), &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, counting a swap of two neighbours as one edit (the commonest
/// typo: `NETFILTRE`).
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    rows[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspellings_find_their_name_and_strangers_find_none() {
        let reasons = ["NETFILTER_DROP", "NO_SOCKET", "TCP_CSUM", "UDP_CSUM"];
        assert_eq!(closest("NETFILTR_DROP", &reasons), Some("NETFILTER_DROP"));
        assert_eq!(closest("netfilter_drop", &reasons), Some("NETFILTER_DROP"));
        assert_eq!(closest("NETFILTRE_DROP", &reasons), Some("NETFILTER_DROP"));
        assert_eq!(closest("UDP_CSUN", &reasons), Some("UDP_CSUM"));
        assert_eq!(closest("SOMETHING_ELSE", &reasons), None);
        assert_eq!(distance("ab", "ba"), 1);
    }
}
