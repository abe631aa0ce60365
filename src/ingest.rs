//! Reading event logs: every worker reads its own record-aligned share of
//! every input file, so parsing scales with workers while line numbers stay
//! exact.
//!
//! A share is a byte range that starts right after a line break that is not
//! inside a quoted field (or at the first data byte) and ends where the next
//! worker's share starts. To find those boundaries, and the line number at
//! which a share starts, a worker scans the bytes before its share for line
//! breaks and quotes; that scan runs at memory speed and needs no messages
//! between workers, so it works unchanged across processes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use csv::ByteRecord;

/// The UTF-8 byte order mark some exporters put before the header.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How many bytes a worker reads at once, before cutting at a record end.
const BLOCK_BYTES: usize = 4 << 20;

/// Expands the `--events` arguments: a file stays as it is, a directory
/// becomes all its regular files in name order.
///
/// # Errors
/// When a path does not exist or a directory cannot be listed; the error names
/// the path.
pub fn expand_paths(paths: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|err| with_path(err, path))?;
        if meta.is_dir() {
            let mut entries = Vec::new();
            for entry in std::fs::read_dir(path).map_err(|err| with_path(err, path))? {
                let entry = entry.map_err(|err| with_path(err, path))?;
                if entry
                    .file_type()
                    .map_err(|err| with_path(err, path))?
                    .is_file()
                {
                    entries.push(entry.path());
                }
            }
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn with_path(err: io::Error, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

/// What a worker needs to know about one input file before reading its share.
#[derive(Clone, Debug)]
pub struct InputFile {
    /// Position of the file among the run's inputs; quarantine rows sort by it.
    pub index: u32,
    /// Where the file is.
    pub path: PathBuf,
    /// Length in bytes when the run started.
    pub len: u64,
    /// First byte after the BOM and, for formats with one, the header line.
    pub data_start: u64,
    /// Line number of the line that starts at `data_start`.
    pub data_first_line: u64,
    /// The header record, when the format has one (BOM removed).
    pub header: Option<ByteRecord>,
    /// The first record of the file (after a header, if any): what spec
    /// detection looks at.
    pub first_record: Option<ByteRecord>,
}

impl InputFile {
    /// Opens `path` and reads its first line or two.
    ///
    /// `has_header` says whether the first line names the columns; pass `None`
    /// to read only the first record, for spec detection.
    ///
    /// # Errors
    /// When the file cannot be opened or read.
    pub fn open(index: u32, path: &Path, delimiter: u8, has_header: bool) -> io::Result<InputFile> {
        let mut file = File::open(path).map_err(|err| with_path(err, path))?;
        let len = file.metadata().map_err(|err| with_path(err, path))?.len();

        // The first few KiB hold the header and a first record in every sane log.
        let mut head = Vec::new();
        (&mut file)
            .take(1 << 16)
            .read_to_end(&mut head)
            .map_err(|err| with_path(err, path))?;
        let bom = if head.starts_with(BOM) { BOM.len() } else { 0 };

        let mut reader = csv_reader(delimiter, &head[bom..]);
        let mut first = ByteRecord::new();
        let mut header = None;
        let (mut data_start, mut data_first_line) = (bom as u64, 1);
        if has_header && reader.read_byte_record(&mut first).unwrap_or(false) {
            let end = reader.position().byte() as usize;
            data_start = (bom + end) as u64;
            data_first_line = 1 + memchr::memchr_iter(b'\n', &head[bom..bom + end]).count() as u64;
            header = Some(first.clone());
        }
        let first_record = match reader.read_byte_record(&mut first) {
            Ok(true) => Some(first),
            _ => None,
        };
        if data_start > len {
            data_start = len;
        }
        Ok(InputFile {
            index,
            path: path.to_path_buf(),
            len,
            data_start,
            data_first_line,
            header,
            first_record,
        })
    }

    /// The byte range `[start, end)` of worker `worker` among `peers`, cut at
    /// record boundaries, with the line number at `start`.
    ///
    /// The shares of all workers tile the data bytes exactly.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn share(&self, worker: usize, peers: usize) -> io::Result<Share> {
        let data = self.len - self.data_start;
        let nominal =
            |w: usize| self.data_start + (data as u128 * w as u128 / peers as u128) as u64;
        let mut scanner = BoundaryScanner::new(self)?;
        let start = scanner.boundary_at_or_after(nominal(worker))?;
        let first_line = scanner.line;
        let end = if worker + 1 == peers {
            self.len
        } else {
            scanner.boundary_at_or_after(nominal(worker + 1).max(start))?
        };
        Ok(Share {
            start,
            end,
            first_line,
        })
    }
}

/// A worker's part of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Line number of the line that starts at `start`.
    pub first_line: u64,
}

/// Walks a file from its first data byte, counting line breaks and quotes,
/// to find record boundaries.
struct BoundaryScanner {
    file: File,
    /// Bytes scanned so far, as a file offset.
    pos: u64,
    /// Line number of the line containing `pos`.
    line: u64,
    /// Whether `pos` is inside a quoted field (odd count of quotes so far).
    in_quotes: bool,
    /// Whether the byte before `pos` is a line break outside quotes.
    at_record_start: bool,
    len: u64,
}

impl BoundaryScanner {
    fn new(input: &InputFile) -> io::Result<BoundaryScanner> {
        let mut file = File::open(&input.path).map_err(|err| with_path(err, &input.path))?;
        file.seek(SeekFrom::Start(input.data_start))?;
        Ok(BoundaryScanner {
            file,
            pos: input.data_start,
            line: input.data_first_line,
            in_quotes: false,
            at_record_start: true,
            len: input.len,
        })
    }

    /// The first record boundary at or after `target` (or the end of file).
    /// Leaves `self.line` at that boundary's line number.
    fn boundary_at_or_after(&mut self, target: u64) -> io::Result<u64> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if self.pos >= target && self.at_record_start {
                return Ok(self.pos);
            }
            if self.pos >= self.len {
                return Ok(self.len);
            }
            let want = ((self.len - self.pos) as usize).min(buf.len());
            let got = self.file.read(&mut buf[..want])?;
            if got == 0 {
                self.len = self.pos;
                return Ok(self.pos);
            }
            // Before the target only the counts matter; after it, stop at the first
            // line break outside quotes.
            for (offset, &byte) in buf[..got].iter().enumerate() {
                if self.pos + offset as u64 >= target && self.at_record_start {
                    self.pos += offset as u64;
                    self.file.seek(SeekFrom::Start(self.pos))?;
                    return Ok(self.pos);
                }
                match byte {
                    b'"' => {
                        self.in_quotes = !self.in_quotes;
                        self.at_record_start = false;
                    }
                    b'\n' => {
                        self.line += 1;
                        self.at_record_start = !self.in_quotes;
                    }
                    _ => self.at_record_start = false,
                }
            }
            self.pos += got as u64;
        }
    }
}

fn csv_reader<R: Read>(delimiter: u8, input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(input)
}

/// One record as read: where it starts, its fields and its raw bytes.
pub struct Row<'a> {
    /// Line number where the record starts.
    pub line: u64,
    /// The fields.
    pub record: &'a ByteRecord,
    /// The raw text of the record, without its line break.
    pub raw: &'a [u8],
}

/// Reads the records of one share, a block at a time.
pub struct ShareReader {
    file: File,
    delimiter: u8,
    /// Bytes of the share not yet read from the file.
    remaining: u64,
    /// The current block: whole records only.
    block: Vec<u8>,
    /// Bytes read from the file that belong to the next block (a partial record).
    carry: Vec<u8>,
    /// Line number at the start of the current block.
    block_line: u64,
    /// Line number at the start of `carry`.
    carry_line: u64,
    record: ByteRecord,
}

impl ShareReader {
    /// Opens `input` at the start of `share`.
    ///
    /// # Errors
    /// When the file cannot be opened or positioned.
    pub fn new(input: &InputFile, share: Share, delimiter: u8) -> io::Result<ShareReader> {
        let mut file = File::open(&input.path).map_err(|err| with_path(err, &input.path))?;
        file.seek(SeekFrom::Start(share.start))?;
        Ok(ShareReader {
            file,
            delimiter,
            remaining: share.end - share.start,
            block: Vec::new(),
            carry: Vec::new(),
            block_line: share.first_line,
            carry_line: share.first_line,
            record: ByteRecord::new(),
        })
    }

    /// Reads the next block of whole records and calls `each` on every record
    /// in it. Returns `false` once the share is exhausted.
    ///
    /// # Errors
    /// When reading the file fails.
    pub fn next_block(&mut self, mut each: impl FnMut(Row<'_>)) -> io::Result<bool> {
        if !self.fill_block()? {
            return Ok(false);
        }
        let mut reader = csv_reader(self.delimiter, &self.block[..]);
        loop {
            let start = reader.position().clone();
            match reader.read_byte_record(&mut self.record) {
                Ok(true) => {}
                Ok(false) => break,
                // NB: csv only fails on invalid UTF-8 with the string API and on I/O; a
                // byte slice with the flexible byte API does not fail.
                Err(_) => break,
            }
            let end = reader.position().byte() as usize;
            let mut from = start.byte() as usize;
            let mut line = self.block_line + start.line() - 1;
            // Empty lines before a record are consumed with it; skip them so the
            // raw text and the line number are the record's own.
            while from < end && matches!(self.block[from], b'\n' | b'\r') {
                if self.block[from] == b'\n' {
                    line += 1;
                }
                from += 1;
            }
            let mut to = end;
            while to > from && matches!(self.block[to - 1], b'\n' | b'\r') {
                to -= 1;
            }
            each(Row {
                line,
                record: &self.record,
                raw: &self.block[from..to],
            });
        }
        self.block_line += memchr::memchr_iter(b'\n', &self.block).count() as u64;
        Ok(true)
    }

    /// Moves the next run of whole records into `self.block`.
    fn fill_block(&mut self) -> io::Result<bool> {
        self.block.clear();
        std::mem::swap(&mut self.block, &mut self.carry);
        self.block_line = self.carry_line;
        loop {
            if self.remaining > 0 && self.block.len() < BLOCK_BYTES {
                let want = (self.remaining as usize).min(BLOCK_BYTES);
                let old = self.block.len();
                self.block.resize(old + want, 0);
                let got = read_full(&mut self.file, &mut self.block[old..])?;
                self.block.truncate(old + got);
                self.remaining = if got < want {
                    0
                } else {
                    self.remaining - got as u64
                };
            }
            if self.remaining == 0 {
                return Ok(!self.block.is_empty());
            }
            // Cut after the last line break that is outside quotes.
            if let Some(cut) = last_record_end(&self.block) {
                self.carry.extend_from_slice(&self.block[cut..]);
                self.block.truncate(cut);
                self.carry_line =
                    self.block_line + memchr::memchr_iter(b'\n', &self.block).count() as u64;
                return Ok(true);
            }
            // One record longer than a block: read on.
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(done)
}

/// The offset just after the last line break of `block` that is not inside a
/// quoted field, if any. `block` starts at a record boundary.
fn last_record_end(block: &[u8]) -> Option<usize> {
    let mut in_quotes = false;
    let mut cut = None;
    for position in memchr::memchr2_iter(b'"', b'\n', block) {
        if block[position] == b'"' {
            in_quotes = !in_quotes;
        } else if !in_quotes {
            cut = Some(position + 1);
        }
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("deltarec-ingest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        path
    }

    /// Reads every share of `path` for `peers` workers; returns (line, raw) pairs in order.
    fn read_all(path: &Path, has_header: bool, peers: usize) -> Vec<(u64, String)> {
        let input = InputFile::open(0, path, b',', has_header).unwrap();
        let mut rows = Vec::new();
        let mut previous_end = input.data_start;
        for worker in 0..peers {
            let share = input.share(worker, peers).unwrap();
            assert_eq!(share.start, previous_end, "shares must tile the file");
            previous_end = share.end;
            let mut reader = ShareReader::new(&input, share, b',').unwrap();
            while reader
                .next_block(|row| {
                    rows.push((row.line, String::from_utf8_lossy(row.raw).into_owned()))
                })
                .unwrap()
            {}
        }
        assert_eq!(previous_end, input.len);
        rows
    }

    #[test]
    fn shares_tile_the_file_and_keep_line_numbers() {
        let mut text = String::from("a,b\n");
        for i in 0..1000 {
            text.push_str(&format!("{i},\"x{i}\"\n"));
        }
        let path = temp_file("tile.csv", text.as_bytes());
        let expected: Vec<(u64, String)> = (0..1000)
            .map(|i| (i as u64 + 2, format!("{i},\"x{i}\"")))
            .collect();
        for peers in [1, 2, 3, 7, 64] {
            assert_eq!(read_all(&path, true, peers), expected, "peers = {peers}");
        }
    }

    #[test]
    fn bom_crlf_blank_lines_and_missing_final_newline_are_handled() {
        let bytes = b"\xEF\xBB\xBFh1,h2\r\n1,2\r\n\r\n3,4\r\n5,6";
        let path = temp_file("quirks.csv", bytes);
        let input = InputFile::open(0, &path, b',', true).unwrap();
        assert_eq!(
            input.header.as_ref().unwrap(),
            &ByteRecord::from(vec!["h1", "h2"])
        );
        for peers in [1, 2, 5] {
            let rows = read_all(&path, true, peers);
            assert_eq!(
                rows,
                vec![
                    (2, "1,2".to_string()),
                    (4, "3,4".to_string()),
                    (5, "5,6".to_string())
                ],
                "peers = {peers}"
            );
        }
    }

    #[test]
    fn quoted_line_breaks_never_split_a_record() {
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!("{i},\"multi\nline {i}\"\n"));
        }
        let path = temp_file("quoted.csv", text.as_bytes());
        for peers in [1, 2, 3, 9] {
            let rows = read_all(&path, false, peers);
            assert_eq!(rows.len(), 200, "peers = {peers}");
            for (i, (line, raw)) in rows.iter().enumerate() {
                assert_eq!(*line, 1 + 2 * i as u64);
                assert_eq!(raw, &format!("{i},\"multi\nline {i}\""));
            }
        }
    }

    #[test]
    fn headerless_files_start_at_line_one() {
        let path = temp_file("plain.csv", b"1,2\n3,4\n");
        let input = InputFile::open(0, &path, b',', false).unwrap();
        assert!(input.header.is_none());
        assert_eq!(
            input.first_record.as_ref().unwrap(),
            &ByteRecord::from(vec!["1", "2"])
        );
        assert_eq!(
            read_all(&path, false, 2),
            vec![(1, "1,2".into()), (2, "3,4".into())]
        );
    }

    #[test]
    fn empty_and_header_only_files_have_no_rows() {
        let empty = temp_file("empty.csv", b"");
        assert!(read_all(&empty, true, 2).is_empty());
        let header_only = temp_file("header.csv", b"a,b\n");
        assert!(read_all(&header_only, true, 3).is_empty());
    }
}
