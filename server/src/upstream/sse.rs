//! Server-sent events as a Streamable HTTP upstream sends them (the `text/event-stream` answer
//! to a POST): only the `data` of each event matters to Palisade, one JSON-RPC message per event.
//!
//! Pure: bytes in, whole events' data out, in the order of the WHATWG event-stream rules that
//! apply here (lines end with LF, CRLF or CR; `data:` lines of one event are joined with LF; a
//! leading space after the colon is dropped; comments and other fields are skipped; an event
//! ends at a blank line).

/// Accumulates the bytes of an event stream; each call returns the events completed so far.
#[derive(Debug, Default)]
pub struct EventStream {
    /// Bytes of a line not yet ended.
    partial: Vec<u8>,
    /// The `data` of the event being read.
    data: Option<Vec<u8>>,
    /// Ended lines are waiting for a possible LF after a CR.
    after_cr: bool,
    max_event_bytes: usize,
}

/// An event longer than allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTooLarge;

impl EventStream {
    /// A stream whose events may carry at most `max_event_bytes` of data.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            ..Self::default()
        }
    }

    /// Feeds `bytes`; returns the data of every event they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, EventTooLarge> {
        let mut events = Vec::new();
        for &byte in bytes {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.partial);
                    if let Some(event) = self.line(&line)? {
                        events.push(event);
                    }
                }
                _ => {
                    if self.partial.len() >= self.max_event_bytes + 8 {
                        return Err(EventTooLarge);
                    }
                    self.partial.push(byte);
                }
            }
        }
        Ok(events)
    }

    /// Takes one ended line; an event's data when the line is blank.
    fn line(&mut self, line: &[u8]) -> Result<Option<Vec<u8>>, EventTooLarge> {
        if line.is_empty() {
            return Ok(self.data.take());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return Ok(None), // a comment
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            let data = self.data.get_or_insert_with(Vec::new);
            if !data.is_empty() {
                data.push(b'\n');
            }
            if data.len() + value.len() > self.max_event_bytes {
                return Err(EventTooLarge);
            }
            data.extend_from_slice(value);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(stream: &mut EventStream, chunks: &[&str]) -> Vec<String> {
        chunks
            .iter()
            .flat_map(|c| stream.feed(c.as_bytes()).unwrap())
            .map(|e| String::from_utf8(e).unwrap())
            .collect()
    }

    #[test]
    fn events_are_whole_whatever_the_chunks() {
        let text = "event: message\nid: 1\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: {\"b\":\ndata: 2}\n\n";
        let mut whole = EventStream::new(1024);
        let expected = ["{\"a\":1}", "{\"b\":\n2}"];
        assert_eq!(all(&mut whole, &[text]), expected);
        // Byte by byte gives the same.
        let mut split = EventStream::new(1024);
        let bytes: Vec<String> = text.chars().map(String::from).collect();
        let chunks: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(all(&mut split, &chunks), expected);
    }

    #[test]
    fn crlf_and_cr_end_lines_too() {
        let mut stream = EventStream::new(1024);
        assert_eq!(all(&mut stream, &["data: x\r\n\r", "\ndata:y\r\r"]), ["x", "y"]);
    }

    #[test]
    fn an_event_without_data_is_no_event() {
        let mut stream = EventStream::new(1024);
        assert!(all(&mut stream, &["event: ping\nid: 7\n\n"]).is_empty());
    }

    #[test]
    fn an_oversize_event_is_refused() {
        let mut stream = EventStream::new(8);
        assert_eq!(stream.feed(b"data: 0123456789\n"), Err(EventTooLarge));
        let mut stream = EventStream::new(8);
        assert_eq!(stream.feed(&[b'x'; 64]), Err(EventTooLarge), "a line that never ends");
    }
}
