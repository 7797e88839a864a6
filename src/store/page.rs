//! Opaque page tokens. A token is the hex of a small JSON object holding the offset of
//! the next page, so it survives any transport and says nothing a client should rely on.

use crate::domain::Error;

#[derive(serde::Serialize, serde::Deserialize)]
struct Token {
    offset: u64,
}

pub(crate) fn encode(offset: usize) -> String {
    let json = serde_json::to_vec(&Token {
        offset: offset as u64,
    })
    .unwrap_or_default();
    json.iter().map(|b| format!("{b:02x}")).collect()
}

/// The offset a token stands for; an empty token is the first page.
pub(crate) fn decode(token: &str) -> Result<usize, Error> {
    if token.is_empty() {
        return Ok(0);
    }
    let bad = || {
        Error::invalid(format!(
            "Invalid page token '{token}': it was not issued by this server"
        ))
    };
    if !token.len().is_multiple_of(2) || token.len() > 128 {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>, Error>>()?;
    let t: Token = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    usize::try_from(t.offset).map_err(|_| bad())
}

/// Cuts `items` to the page at `offset` of `limit` items; returns the page and the
/// token of the next one, absent on the last page.
pub(crate) fn slice<T>(mut items: Vec<T>, offset: usize, limit: usize) -> (Vec<T>, Option<String>) {
    let total = items.len();
    let start = offset.min(total);
    let end = start.saturating_add(limit).min(total);
    items.truncate(end);
    items.drain(..start);
    let next = (end < total).then(|| encode(end));
    (items, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        assert_eq!(decode(&encode(12345)).unwrap(), 12345);
        assert_eq!(decode("").unwrap(), 0);
        for bad in ["zz", "abc", "7b7d", "not a token"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slicing_pages() {
        let (p, next) = slice((0..10).collect(), 0, 4);
        assert_eq!(p, vec![0, 1, 2, 3]);
        let (p, next2) = slice((0..10).collect(), decode(&next.unwrap()).unwrap(), 6);
        assert_eq!(p, vec![4, 5, 6, 7, 8, 9]);
        assert!(next2.is_none());
    }
}
