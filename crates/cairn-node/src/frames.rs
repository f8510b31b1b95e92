//! The framing of a get stream, both ways: `tag (1 byte) | length (u32 BE) | payload`.
//!
//! `H` carries the JSON [`GetHeader`](crate::client::GetHeader), then `D`
//! frames carry plaintext, then `Z` (empty) ends a complete file or `E` (a
//! UTF-8 sentence) reports why it failed. A reader that sees the stream end
//! without `Z` knows the transfer broke.

use bytes::{BufMut, Bytes, BytesMut};

/// The JSON header.
pub const HEADER: u8 = b'H';
/// Plaintext.
pub const DATA: u8 = b'D';
/// A failure, as a sentence.
pub const ERROR: u8 = b'E';
/// The file is complete.
pub const END: u8 = b'Z';

/// Largest header or error frame a decoder accepts.
pub const MAX_SMALL_FRAME: usize = 1 << 20;

const HEAD_LEN: usize = 5;

/// The 5-byte head of a frame with `len` payload bytes.
pub fn head(tag: u8, len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(HEAD_LEN);
    b.put_u8(tag);
    // Data frames are at most 1 MiB, and messages are short sentences.
    b.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    b.freeze()
}

/// A whole frame: its head, then its payload.
pub fn frame(tag: u8, payload: Bytes) -> [Bytes; 2] {
    [head(tag, payload.len()), payload]
}

/// What a decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// The JSON header.
    Header(Bytes),
    /// Some plaintext: a data frame is handed out as its bytes arrive.
    Data(Bytes),
    /// The node's error sentence.
    Error(Bytes),
    /// The file is complete.
    End,
}

/// The stream is not a get stream this version understands.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A header or error frame over [`MAX_SMALL_FRAME`].
    #[error("the node sent a {0}-byte control frame; is it a different Cairn version?")]
    Oversized(usize),
    /// A tag this version does not know.
    #[error("the node sent an unknown frame type {0}; is it a different Cairn version?")]
    UnknownTag(u8),
}

/// Decodes frames from chunks of any size. Data payloads are passed on as
/// slices of the chunks, never reassembled; only heads and the small header
/// and error frames are collected.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    head: [u8; HEAD_LEN],
    head_len: usize,
    data_left: usize,
    small: Option<(u8, usize, BytesMut)>,
}

impl FrameDecoder {
    /// The next frame (or part of a data frame) from the front of `chunk`,
    /// which is advanced past what was used. `None`: feed the next chunk.
    pub fn next(&mut self, chunk: &mut Bytes) -> Result<Option<Frame>, FrameError> {
        loop {
            if self.data_left > 0 {
                if chunk.is_empty() {
                    return Ok(None);
                }
                let part = chunk.split_to(self.data_left.min(chunk.len()));
                self.data_left -= part.len();
                return Ok(Some(Frame::Data(part)));
            }
            if let Some((tag, len, mut payload)) = self.small.take() {
                let take = (len - payload.len()).min(chunk.len());
                payload.extend_from_slice(&chunk.split_to(take));
                if payload.len() < len {
                    self.small = Some((tag, len, payload));
                    return Ok(None);
                }
                let payload = payload.freeze();
                return Ok(Some(if tag == HEADER {
                    Frame::Header(payload)
                } else {
                    Frame::Error(payload)
                }));
            }
            if chunk.is_empty() {
                return Ok(None);
            }
            let take = (HEAD_LEN - self.head_len).min(chunk.len());
            self.head[self.head_len..self.head_len + take].copy_from_slice(&chunk.split_to(take));
            self.head_len += take;
            if self.head_len < HEAD_LEN {
                return Ok(None);
            }
            self.head_len = 0;
            let [tag, l0, l1, l2, l3] = self.head;
            let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
            match tag {
                DATA => self.data_left = len,
                HEADER | ERROR if len <= MAX_SMALL_FRAME => {
                    self.small = Some((tag, len, BytesMut::with_capacity(len)));
                }
                HEADER | ERROR => return Err(FrameError::Oversized(len)),
                END => return Ok(Some(Frame::End)),
                other => return Err(FrameError::UnknownTag(other)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(frames: &[(u8, &[u8])]) -> Vec<u8> {
        frames
            .iter()
            .flat_map(|(tag, p)| frame(*tag, Bytes::copy_from_slice(p)))
            .flat_map(|b| b.to_vec())
            .collect()
    }

    /// Feeds `bytes` in chunks cut at `cuts`; returns the header, the data
    /// and the last frame seen.
    fn decode(bytes: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<u8>, Option<Frame>) {
        let mut d = FrameDecoder::default();
        let (mut header, mut data, mut last) = (Vec::new(), Vec::new(), None);
        let mut at = 0;
        for end in cuts.iter().copied().chain([bytes.len()]) {
            let mut chunk = Bytes::copy_from_slice(&bytes[at..end]);
            at = end;
            while let Some(f) = d.next(&mut chunk).unwrap() {
                match f {
                    Frame::Header(h) => header.extend_from_slice(&h),
                    Frame::Data(p) => data.extend_from_slice(&p),
                    other => last = Some(other),
                }
            }
            assert!(chunk.is_empty(), "the decoder left bytes unread");
        }
        (header, data, last)
    }

    #[test]
    fn frames_survive_any_chunking() {
        let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let bytes = stream(&[
            (HEADER, b"{\"size\":3000}"),
            (DATA, &body[..1000]),
            (DATA, &[]),
            (DATA, &body[1000..]),
            (END, &[]),
        ]);
        let whole = decode(&bytes, &[]);
        assert_eq!(whole.0, b"{\"size\":3000}");
        assert_eq!(whole.1, body);
        assert_eq!(whole.2, Some(Frame::End));
        // Cut anywhere once, and into single bytes.
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes, &[cut]), whole, "cut at {cut}");
        }
        let every: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(decode(&bytes, &every), whole);
    }

    #[test]
    fn errors_and_bad_streams() {
        let bytes = stream(&[(HEADER, b"{}"), (DATA, b"abc"), (ERROR, b"segment 3 ...")]);
        let (_, data, last) = decode(&bytes, &[7, 8]);
        assert_eq!(data, b"abc");
        assert_eq!(
            last,
            Some(Frame::Error(Bytes::from_static(b"segment 3 ...")))
        );

        let mut d = FrameDecoder::default();
        let mut huge = head(HEADER, MAX_SMALL_FRAME + 1);
        assert_eq!(
            d.next(&mut huge),
            Err(FrameError::Oversized(MAX_SMALL_FRAME + 1))
        );
        let mut d = FrameDecoder::default();
        let mut unknown = head(b'Q', 0);
        assert_eq!(d.next(&mut unknown), Err(FrameError::UnknownTag(b'Q')));
    }
}
