//! Opaque page tokens: the hex of a small JSON object holding where the next page
//! starts (an offset, or for ordered scans the last run or point returned), so a token
//! survives any transport and says nothing a client should rely on.

use crate::domain::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Position {
    Start,
    Offset(usize),
    /// After the run with this start time and id, in (start_time DESC, run_id ASC) order.
    After(i64, String),
    /// After this metric point (timestamp, step, value bits) in history order; `chunk`
    /// is where the next point was stored (history chunk sequence number, index in the
    /// chunk) when the history was in order as stored, so the next page reads from there.
    AfterPoint {
        last: (i64, i64, u64),
        chunk: Option<(u64, u64)>,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Token {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<(i64, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    point: Option<(i64, i64, u64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunk: Option<(u64, u64)>,
}

pub(crate) fn encode(position: Position) -> String {
    let none = Token {
        offset: None,
        after: None,
        point: None,
        chunk: None,
    };
    let token = match position {
        Position::Start => Token {
            offset: Some(0),
            ..none
        },
        Position::Offset(n) => Token {
            offset: Some(n as u64),
            ..none
        },
        Position::After(t, id) => Token {
            after: Some((t, id)),
            ..none
        },
        Position::AfterPoint { last, chunk } => Token {
            point: Some(last),
            chunk,
            ..none
        },
    };
    let json = serde_json::to_vec(&token).unwrap_or_default();
    json.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn invalid(token: &str) -> Error {
    let shown: String = token.chars().take(64).collect();
    Error::invalid(format!(
        "Invalid page token '{shown}': it was not issued by this server for this query"
    ))
}

/// Where a token says to start; an empty token is the first page.
pub(crate) fn decode(token: &str) -> Result<Position, Error> {
    if token.is_empty() {
        return Ok(Position::Start);
    }
    if !token.len().is_multiple_of(2) || token.len() > 2048 || !token.is_ascii() {
        return Err(invalid(token));
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).map_err(|_| invalid(token)))
        .collect::<Result<Vec<u8>, Error>>()?;
    let t: Token = serde_json::from_slice(&bytes).map_err(|_| invalid(token))?;
    match (t.offset, t.after, t.point, t.chunk) {
        (Some(n), None, None, None) => Ok(Position::Offset(
            usize::try_from(n).map_err(|_| invalid(token))?,
        )),
        (None, Some((time, id)), None, None) => Ok(Position::After(time, id)),
        (None, None, Some(last), chunk) => Ok(Position::AfterPoint { last, chunk }),
        _ => Err(invalid(token)),
    }
}

/// The offset a token stands for (for listings paged by offset only).
pub(crate) fn decode_offset(token: &str) -> Result<usize, Error> {
    match decode(token)? {
        Position::Start => Ok(0),
        Position::Offset(n) => Ok(n),
        Position::After(..) | Position::AfterPoint { .. } => Err(invalid(token)),
    }
}

/// Cuts `items` to the page at `offset` of `limit` items; returns the page and the
/// token of the next one, absent on the last page.
pub(crate) fn slice<T>(mut items: Vec<T>, offset: usize, limit: usize) -> (Vec<T>, Option<String>) {
    let total = items.len();
    let start = offset.min(total);
    let end = start.saturating_add(limit).min(total);
    items.truncate(end);
    items.drain(..start);
    let next = (end < total).then(|| encode(Position::Offset(end)));
    (items, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        assert_eq!(
            decode(&encode(Position::Offset(12345))).unwrap(),
            Position::Offset(12345)
        );
        let after = Position::After(17, "abc".into());
        assert_eq!(decode(&encode(after.clone())).unwrap(), after);
        for chunk in [None, Some((9, 3))] {
            let point = Position::AfterPoint {
                last: (-1, 2, f64::NAN.to_bits()),
                chunk,
            };
            assert_eq!(decode(&encode(point.clone())).unwrap(), point);
        }
        assert_eq!(decode("").unwrap(), Position::Start);
        for bad in ["zz", "abc", "7b7d", "not a token", "é1"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slicing_pages() {
        let (p, next) = slice((0..10).collect(), 0, 4);
        assert_eq!(p, vec![0, 1, 2, 3]);
        let (p, next2) = slice((0..10).collect(), decode_offset(&next.unwrap()).unwrap(), 6);
        assert_eq!(p, vec![4, 5, 6, 7, 8, 9]);
        assert!(next2.is_none());
    }
}
