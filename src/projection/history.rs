//! Metric history chunks. Each `MetricsLogged` event stores, per metric key, one value
//! holding all of its points packed at 24 bytes a point (timestamp, step, value as
//! little-endian 64-bit words). A 100,000-point history is then a hundred-odd
//! sequential reads instead of 100,000 keys, and a write costs one key per key per batch.

use crate::domain::MetricPoint;

pub(crate) const POINT_BYTES: usize = 24;

/// A point without its key: the history of one key is read and written as these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub timestamp: i64,
    pub step: i64,
    pub value: f64,
}

impl Point {
    pub fn with_key(self, key: &str) -> MetricPoint {
        MetricPoint {
            key: key.to_string(),
            value: self.value,
            timestamp: self.timestamp,
            step: self.step,
        }
    }

    /// History order: (timestamp, step, value), with NaN after every number.
    pub(crate) fn order(&self, other: &Self) -> std::cmp::Ordering {
        (self.timestamp, self.step)
            .cmp(&(other.timestamp, other.step))
            .then(self.value.total_cmp(&other.value))
    }

    fn same(&self, other: &Self) -> bool {
        self.timestamp == other.timestamp
            && self.step == other.step
            && self.value.to_bits() == other.value.to_bits()
    }
}

pub(crate) fn encode(timestamps: &[i64], steps: &[i64], values: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * POINT_BYTES);
    for ((t, s), v) in timestamps.iter().zip(steps).zip(values) {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    out
}

fn word(b: &[u8]) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    w
}

/// Appends the points of one chunk to `out`; a trailing partial point is ignored.
pub(crate) fn decode_into(chunk: &[u8], out: &mut Vec<Point>) {
    out.reserve(chunk.len() / POINT_BYTES);
    for p in chunk.chunks_exact(POINT_BYTES) {
        out.push(Point {
            timestamp: i64::from_le_bytes(word(&p[0..8])),
            step: i64::from_le_bytes(word(&p[8..16])),
            value: f64::from_bits(u64::from_le_bytes(word(&p[16..24]))),
        });
    }
}

/// Puts a history in MLflow's order and drops exact duplicates (a retried write logs
/// the same point twice; MLflow's primary key ignores the second).
pub(crate) fn normalize(points: &mut Vec<Point>) {
    // Training loops log in order, so the sort is usually skipped.
    if !points.is_sorted_by(|a, b| a.order(b).is_le()) {
        points.sort_by(Point::order);
    }
    points.dedup_by(|a, b| a.same(b));
}

/// A history read while writes went on, made exact: `recent` holds every point of the
/// events written after the read began, some of which the read may already have seen;
/// each is taken out and put back once, and the result is normalized. So the answer is
/// the history up to the last of those events, no point missing and none twice.
pub(crate) fn with_recent(mut points: Vec<Point>, recent: Vec<Point>) -> Vec<Point> {
    if !recent.is_empty() {
        let identity = |p: &Point| (p.timestamp, p.step, p.value.to_bits());
        let written: std::collections::HashSet<_> = recent.iter().map(identity).collect();
        points.retain(|p| !written.contains(&identity(p)));
        points.extend(recent);
    }
    normalize(&mut points);
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(step: i64) -> Point {
        Point {
            timestamp: 100 + step,
            step,
            value: step as f64,
        }
    }

    #[test]
    fn recent_points_are_there_once_whether_the_read_saw_them_or_not() {
        let recent = vec![at(3), at(4)];
        let steps = |ps: Vec<Point>| ps.iter().map(|p| p.step).collect::<Vec<_>>();
        // The read missed the recent events, saw one of them, or saw both.
        for read in [
            vec![at(1), at(2)],
            vec![at(1), at(2), at(3)],
            vec![at(1), at(2), at(3), at(4)],
        ] {
            assert_eq!(steps(with_recent(read, recent.clone())), [1, 2, 3, 4]);
        }
        assert_eq!(
            steps(with_recent(vec![at(2), at(1)], vec![])),
            [1, 2],
            "normalized"
        );
    }

    #[test]
    fn round_trip_and_order() {
        let chunk = encode(&[5, 1, 1, 1], &[0, 2, 1, 1], &[1.0, f64::NAN, -3.0, -3.0]);
        let mut pts = Vec::new();
        decode_into(&chunk, &mut pts);
        assert_eq!(pts.len(), 4);
        normalize(&mut pts);
        let got: Vec<(i64, i64)> = pts.iter().map(|p| (p.timestamp, p.step)).collect();
        assert_eq!(got, vec![(1, 1), (1, 2), (5, 0)]);
        assert!(pts[1].value.is_nan());
    }
}
