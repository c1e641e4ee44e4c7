//! `torchfit evaluate`'s report of a classifier: the confusion matrix and the per-class
//! precision, recall and F1 that scikit-learn's `classification_report` gives, as text laid
//! out as it lays it out, or as the dictionary of its `output_dict=True`.

use serde_json::{json, Map, Value};

/// The confusion matrix: `counts[true][predicted]`, classes in the model's order (every class
/// the model knows, found in the data or not).
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    pub labels: Vec<String>,
    pub counts: Vec<Vec<u64>>,
}

/// One row of the report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

impl Scores {
    fn json(&self) -> Value {
        json!({"precision": self.precision, "recall": self.recall, "f1-score": self.f1, "support": self.support})
    }
}

/// `numerator / denominator`, 0 where the denominator is 0: scikit-learn's `zero_division=0`
/// (its default, "warn", gives 0 as well, with a warning).
fn divide(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 {
        0.0
    } else {
        numerator / denominator
    }
}

impl Confusion {
    /// The matrix over `labels` of row-major `counts` (`true * classes + predicted`, as
    /// `metrics::evaluate_with_confusion` counts them).
    pub fn from_counts(labels: Vec<String>, counts: &[i64]) -> Confusion {
        let n = labels.len();
        let row = |t: usize| (0..n).map(|p| counts.get(t * n + p).map_or(0, |&c| c.max(0) as u64)).collect();
        Confusion { counts: (0..n).map(row).collect(), labels }
    }

    /// Each class's precision, recall, F1 and support, in label order. F1 is scikit-learn's
    /// `2 tp / (2 tp + fp + fn)`: the same as from precision and recall, but 0, not NaN,
    /// where both are 0.
    pub fn scores(&self) -> Vec<Scores> {
        (0..self.labels.len())
            .map(|c| {
                let tp = self.counts[c][c] as f64;
                let support: u64 = self.counts[c].iter().sum();
                let predicted: u64 = self.counts.iter().map(|row| row[c]).sum();
                Scores {
                    precision: divide(tp, predicted as f64),
                    recall: divide(tp, support as f64),
                    f1: divide(2.0 * tp, (support + predicted) as f64),
                    support,
                }
            })
            .collect()
    }

    /// The samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// The share of samples on the diagonal.
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.labels.len()).map(|c| self.counts[c][c]).sum();
        divide(correct as f64, self.total() as f64)
    }

    /// The macro average (each class alike) and the average weighted by support.
    pub fn averages(&self) -> (Scores, Scores) {
        let scores = self.scores();
        let total = self.total();
        let mean = |f: fn(&Scores) -> f64| divide(scores.iter().map(f).sum(), scores.len() as f64);
        let weighted =
            |f: fn(&Scores) -> f64| divide(scores.iter().map(|s| f(s) * s.support as f64).sum(), total as f64);
        let average = |avg: &dyn Fn(fn(&Scores) -> f64) -> f64| Scores {
            precision: avg(|s| s.precision),
            recall: avg(|s| s.recall),
            f1: avg(|s| s.f1),
            support: total,
        };
        (average(&mean), average(&weighted))
    }

    /// `{"labels": [...], "matrix": [[...]]}`.
    pub fn matrix_json(&self) -> Value {
        json!({"labels": self.labels, "matrix": self.counts})
    }

    /// `classification_report(output_dict=True)`'s dictionary: a key per class, then
    /// `accuracy`, `macro avg` and `weighted avg`.
    pub fn report_json(&self) -> Value {
        let mut report = Map::new();
        for (label, scores) in self.labels.iter().zip(self.scores()) {
            report.insert(label.clone(), scores.json());
        }
        let (macro_avg, weighted) = self.averages();
        report.insert("accuracy".into(), json!(self.accuracy()));
        report.insert("macro avg".into(), macro_avg.json());
        report.insert("weighted avg".into(), weighted.json());
        Value::Object(report)
    }

    /// The matrix as text: a row per true class, a column per predicted one, right-aligned.
    pub fn matrix_text(&self) -> String {
        let width = |texts: &mut dyn Iterator<Item = usize>| texts.max().unwrap_or(0);
        let name_width = width(&mut self.labels.iter().map(|l| l.chars().count())).max("true".len());
        let cell_width = width(&mut self.counts.iter().flatten().map(|c| c.to_string().len()))
            .max(width(&mut self.labels.iter().map(|l| l.chars().count())));
        let mut out = "confusion matrix (rows: true class, columns: predicted class)\n".to_string();
        out += &format!("{:>name_width$}", "true");
        for label in &self.labels {
            out += &format!("  {label:>cell_width$}");
        }
        out.push('\n');
        for (label, row) in self.labels.iter().zip(&self.counts) {
            out += &format!("{label:>name_width$}");
            for count in row {
                out += &format!("  {count:>cell_width$}");
            }
            out.push('\n');
        }
        out
    }

    /// `print(classification_report(...))`'s text, two digits.
    pub fn report_text(&self) -> String {
        const DIGITS: usize = 2;
        let width = self.labels.iter().map(|l| l.chars().count()).max().unwrap_or(0).max("weighted avg".len());
        let row = |name: &str, s: &Scores| {
            let (p, r, f, n) = (s.precision, s.recall, s.f1, s.support);
            format!("{name:>width$}  {p:>9.DIGITS$} {r:>9.DIGITS$} {f:>9.DIGITS$} {n:>9}\n")
        };
        let mut out =
            format!("{:>width$}  {:>9} {:>9} {:>9} {:>9}\n\n", "", "precision", "recall", "f1-score", "support");
        for (label, scores) in self.labels.iter().zip(self.scores()) {
            out += &row(label, &scores);
        }
        out.push('\n');
        let (accuracy, total) = (self.accuracy(), self.total());
        out += &format!("{:>width$}  {:>9} {:>9} {accuracy:>9.DIGITS$} {total:>9}\n", "accuracy", "", "");
        let (macro_avg, weighted) = self.averages();
        out += &row("macro avg", &macro_avg);
        out += &row("weighted avg", &weighted);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scikit-learn 1.9's classification_report on y_true [a, b, c, c, c], y_pred
    /// [a, a, c, c, b] with labels [a, b, c, d] (d never seen) and zero_division=0.
    fn example() -> Confusion {
        let mut counts = vec![0; 16];
        for (t, p) in [(0, 0), (1, 0), (2, 2), (2, 2), (2, 1)] {
            counts[t * 4 + p] += 1;
        }
        Confusion::from_counts(["a", "b", "c", "d"].map(String::from).to_vec(), &counts)
    }

    #[test]
    fn scores_are_scikit_learns() {
        let confusion = example();
        let scores = confusion.scores();
        assert_eq!(scores[0], Scores { precision: 0.5, recall: 1.0, f1: 2.0 / 3.0, support: 1 });
        assert_eq!(scores[1], Scores { precision: 0.0, recall: 0.0, f1: 0.0, support: 1 });
        assert_eq!(scores[2], Scores { precision: 1.0, recall: 2.0 / 3.0, f1: 0.8, support: 3 });
        assert_eq!(scores[3], Scores { precision: 0.0, recall: 0.0, f1: 0.0, support: 0 });
        assert_eq!(confusion.accuracy(), 0.6);
        let (macro_avg, weighted) = confusion.averages();
        assert_eq!(macro_avg.precision, 0.375);
        assert!((macro_avg.f1 - (2.0 / 3.0 + 0.8) / 4.0).abs() < 1e-15);
        assert!((weighted.recall - 0.6).abs() < 1e-15);
        assert_eq!(weighted.support, 5);
    }

    #[test]
    fn text_is_laid_out_as_classification_report() {
        let text = example().report_text();
        let want = "              precision    recall  f1-score   support\n\n\
                    \x20          a       0.50      1.00      0.67         1\n\
                    \x20          b       0.00      0.00      0.00         1\n\
                    \x20          c       1.00      0.67      0.80         3\n\
                    \x20          d       0.00      0.00      0.00         0\n\n\
                    \x20   accuracy                           0.60         5\n\
                    \x20  macro avg       0.38      0.42      0.37         5\n\
                    weighted avg       0.70      0.60      0.61         5\n";
        assert_eq!(text, want);
        let matrix = example().matrix_text();
        assert!(matrix.ends_with("   c  0  1  2  0\n   d  0  0  0  0\n"), "{matrix}");
    }

    #[test]
    fn json_has_output_dicts_keys() {
        let report = example().report_json();
        let keys: Vec<&String> = report.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "b", "c", "d", "accuracy", "macro avg", "weighted avg"]);
        assert_eq!(report["a"]["f1-score"], json!(2.0 / 3.0));
        assert_eq!(report["d"]["support"], json!(0));
    }
}
