//! Ranking metrics for the model card (ROC AUC, average precision) and numpy's linear
//! percentile, used for the `contamination` offset.

/// numpy's `np.percentile(values, q)` with the default `linear` method. `values` need not be
/// sorted. Returns NaN for an empty input.
pub fn percentile_linear(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let virtual_index = (n as f64 - 1.0) * (q / 100.0);
    let prev = virtual_index.floor().clamp(0.0, (n - 1) as f64);
    let lo = prev as usize;
    let hi = (lo + 1).min(n - 1);
    let gamma = virtual_index - prev;
    let (a, b) = (v[lo], v[hi]);
    // numpy's _lerp: a + (b-a)*t, or b - (b-a)*(1-t) when t >= 0.5.
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

/// Area under the ROC curve of `scores` (higher = more positive) against `labels`;
/// ties count half. `None` when only one class is present.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mann–Whitney U with average ranks for ties.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (pos as f64) * (pos as f64 + 1.0) / 2.0;
    Some(u / (pos as f64 * neg as f64))
}

/// Average precision as scikit-learn's `average_precision_score` defines it:
/// `sum_n (R_n - R_{n-1}) P_n` over descending distinct score thresholds.
/// `None` when there is no positive label.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let pos = labels.iter().filter(|&&l| l).count();
    if pos == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == s {
            if labels[idx[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let recall = tp as f64 / pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Some(ap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy() {
        // np.percentile([1, 2, 3, 4], q) for q = 0, 10, 50, 75, 100
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile_linear(&v, 0.0), 1.0);
        assert!((percentile_linear(&v, 10.0) - 1.3).abs() < 1e-15);
        assert_eq!(percentile_linear(&v, 50.0), 2.5);
        assert_eq!(percentile_linear(&v, 75.0), 3.25);
        assert_eq!(percentile_linear(&v, 100.0), 4.0);
        assert_eq!(percentile_linear(&[7.0], 30.0), 7.0);
    }

    #[test]
    fn auc_and_ap_match_sklearn_examples() {
        // sklearn docs: roc_auc_score([0,0,1,1],[0.1,0.4,0.35,0.8]) = 0.75,
        // average_precision_score(same) = 0.8333...
        let y = [false, false, true, true];
        let s = [0.1, 0.4, 0.35, 0.8];
        assert!((roc_auc(&s, &y).unwrap() - 0.75).abs() < 1e-12);
        assert!((average_precision(&s, &y).unwrap() - 0.833_333_333_333_333_3).abs() < 1e-12);
        assert_eq!(roc_auc(&s, &[true; 4]), None);
        assert_eq!(average_precision(&s, &[false; 4]), None);
        // ties count half
        assert_eq!(roc_auc(&[1.0, 1.0], &[true, false]), Some(0.5));
    }
}
