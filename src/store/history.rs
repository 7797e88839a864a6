//! Reading a metric's history a page at a time.
//!
//! A history is stored as chunks keyed by the sequence number of the event that logged
//! them. Training loops log in order, so the chunks, read in key order, are almost
//! always already in history order (timestamp, step, value). A page token then carries
//! the last point returned and where the next one is stored, and the next page decodes
//! only its own points: paging through 10,000,000 points costs one pass over them, not
//! one pass a page. The first page checks the whole history once; a history found out of
//! order anywhere is sorted, and its pages continue after the last point returned.
//!
//! Either way a page holds the points after the token's point, in order, so a paging
//! pass returns every point that existed when it began exactly once. Points written
//! during the pass after the last one returned appear in a later page; a point written
//! during the pass that sorts before the page being read may be missed by this pass.

use std::cmp::Ordering;

use crate::db::keys;
use crate::domain::Error;
use crate::paging::{self as page, Position};
use crate::projection::{self, history, history::Point};

/// One page of a history, and the token of the next page if there is one.
pub(crate) type HistoryPage = (Vec<Point>, Option<String>);

/// Every point of a run's metric as stored, in no particular order (the run must exist).
pub(crate) fn points(tree: &sled::Tree, run_id: &str, key: &str) -> Result<Vec<Point>, Error> {
    projection::find_run(tree, run_id)?;
    stored(tree, run_id, key)
}

/// [`points`] of a run already found.
fn stored(tree: &sled::Tree, run_id: &str, key: &str) -> Result<Vec<Point>, Error> {
    let mut points = Vec::new();
    for chunk in tree.scan_prefix(keys::history(run_id, key)).values() {
        history::decode_into(&chunk?, &mut points);
    }
    Ok(points)
}

/// The page of `limit` points that `page_token` stands for.
pub(crate) fn page(
    tree: &sled::Tree,
    run_id: &str,
    key: &str,
    limit: usize,
    page_token: &str,
) -> Result<HistoryPage, Error> {
    projection::find_run(tree, run_id)?;
    let (after, from) = match page::decode(page_token)? {
        Position::Start => (None, None),
        Position::AfterPoint { last, chunk } => (Some(point_of(last)), chunk),
        // A token from a server that paged histories by offset.
        Position::Offset(offset) => return sorted(tree, run_id, key, None, offset, limit),
        Position::After(..) => return Err(page::invalid(page_token)),
    };
    // A first page, or a later one of a history that was in order as stored.
    if (after.is_none() || from.is_some())
        && let Some(page) = in_stored_order(tree, run_id, key, after, from, limit)?
    {
        return Ok(page);
    }
    sorted(tree, run_id, key, after, 0, limit)
}

/// The page read straight from the chunks, or `None` if a point on the way sorts
/// before the one read just before it (the history is not in order as stored). The
/// first page (no `after`) reads to the end, to know the whole history is in order; a
/// later page stops when it is full.
fn in_stored_order(
    tree: &sled::Tree,
    run_id: &str,
    key: &str,
    after: Option<Point>,
    from: Option<(u64, u64)>,
    limit: usize,
) -> Result<Option<HistoryPage>, Error> {
    let whole = after.is_none();
    let prefix = keys::history(run_id, key);
    let (start_seq, skip) = from.unwrap_or((0, 0));
    let mut out = Vec::new();
    let mut last = after;
    let mut next = None;
    let mut decoded = Vec::new();
    for item in tree.range(keys::history_chunk(run_id, key, start_seq)..) {
        let (k, chunk) = item?;
        if !k.starts_with(&prefix) {
            break;
        }
        let seq = chunk_seq(&k, prefix.len())
            .ok_or_else(|| Error::Corrupt("a metric history chunk key is malformed".into()))?;
        decoded.clear();
        history::decode_into(&chunk, &mut decoded);
        let skip = if seq == start_seq { skip } else { 0 };
        for (i, p) in decoded.iter().enumerate().skip(skip as usize) {
            match last.map(|l| p.order(&l)) {
                Some(Ordering::Less) => return Ok(None),
                // The same point logged again (a retried write): MLflow keeps it once.
                Some(Ordering::Equal) => continue,
                _ => {}
            }
            if out.len() == limit {
                if next.is_none() {
                    let last = out.last().copied().unwrap_or(*p);
                    next = Some(token(last, Some((seq, i as u64))));
                }
                if !whole {
                    return Ok(Some((out, next)));
                }
            } else {
                out.push(*p);
            }
            last = Some(*p);
        }
    }
    Ok(Some((out, next)))
}

/// The page of a history that is not in order as stored: all of it read and sorted,
/// then the points after `after` (and `offset` more), `limit` of them.
fn sorted(
    tree: &sled::Tree,
    run_id: &str,
    key: &str,
    after: Option<Point>,
    offset: usize,
    limit: usize,
) -> Result<HistoryPage, Error> {
    let mut all = stored(tree, run_id, key)?;
    history::normalize(&mut all);
    let start = after.map_or(0, |a| all.partition_point(|p| p.order(&a).is_le()));
    let start = start.saturating_add(offset).min(all.len());
    let end = start.saturating_add(limit).min(all.len());
    let next = (end < all.len() && end > start).then(|| token(all[end - 1], None));
    all.truncate(end);
    all.drain(..start);
    Ok((all, next))
}

fn token(last: Point, chunk: Option<(u64, u64)>) -> String {
    page::encode(Position::AfterPoint {
        last: (last.timestamp, last.step, last.value.to_bits()),
        chunk,
    })
}

fn point_of((timestamp, step, bits): (i64, i64, u64)) -> Point {
    Point {
        timestamp,
        step,
        value: f64::from_bits(bits),
    }
}

fn chunk_seq(key: &[u8], prefix_len: usize) -> Option<u64> {
    let tail: [u8; 8] = key.get(prefix_len..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}
