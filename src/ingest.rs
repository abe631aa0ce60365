//! Reading event logs: every worker reads its own line-aligned share of
//! every input file, so parsing scales with workers while line numbers stay
//! exact.
//!
//! A line break always ends a record: fields may be quoted (and hold
//! delimiters and doubled quotes), but a quoted field never spans lines. Event
//! logs do not need that, and it is what lets a worker start reading in the
//! middle of a file without having read what comes before: a share starts
//! right after a line break, and a stray quote can never swallow the lines
//! after it, whichever worker reads them.
//!
//! A worker finds its share's first line number by counting the line breaks
//! before it, at memory speed and with no messages between workers, so this
//! works unchanged across processes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use csv::ByteRecord;

/// The UTF-8 byte order mark some exporters put before the header.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How many bytes a worker reads at once, before cutting at a line end.
const BLOCK_BYTES: usize = 4 << 20;

/// Expands the `--events` arguments: a file stays as it is, a directory
/// becomes all its regular files in name order, except hidden ones (names
/// starting with a dot).
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
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if !hidden && entry.path().is_file() {
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

/// Splits one line into fields, with CSV quoting, reusing its buffers.
pub struct LineParser {
    core: csv_core::Reader,
    output: Vec<u8>,
    ends: Vec<usize>,
}

impl LineParser {
    /// A parser for fields separated by `delimiter`.
    pub fn new(delimiter: u8) -> LineParser {
        LineParser {
            // NB: only '\n' ends a line (the caller splits on it); a bare '\r'
            // inside a line is field content, never a record end.
            core: csv_core::ReaderBuilder::new()
                .delimiter(delimiter)
                .terminator(csv_core::Terminator::Any(b'\n'))
                .build(),
            output: vec![0; 1024],
            ends: vec![0; 32],
        }
    }

    /// Parses `line` (no line break) into `record`. An unclosed quote ends at
    /// the end of the line.
    pub fn parse(&mut self, line: &[u8], record: &mut ByteRecord) {
        use csv_core::ReadRecordResult;
        self.core.reset();
        let (mut input, mut out, mut end) = (line, 0, 0);
        loop {
            let (result, read, wrote, ended) =
                self.core
                    .read_record(input, &mut self.output[out..], &mut self.ends[end..]);
            input = &input[read..];
            out += wrote;
            end += ended;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => self.output.resize(self.output.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                ReadRecordResult::Record | ReadRecordResult::End => break,
            }
        }
        record.clear();
        let mut from = 0;
        for &to in &self.ends[..end] {
            record.push_field(&self.output[from..to]);
            from = to;
        }
    }
}

/// Calls `each(line_number, line)` for every non-empty line of `block`, the
/// first of which is numbered `first_line`; strips a trailing `\r`. Returns
/// the number of line breaks in the block.
fn for_each_line(block: &[u8], first_line: u64, mut each: impl FnMut(u64, &[u8])) -> u64 {
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', block).chain(std::iter::once(block.len()));
    for (line, end) in (first_line..).zip(ends) {
        if start > block.len() {
            break;
        }
        let text = &block[start..end];
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !text.is_empty() {
            each(line, text);
        }
        start = end + 1;
    }
    memchr::memchr_iter(b'\n', block).count() as u64
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
    /// `has_header` says whether the first line names the columns.
    ///
    /// # Errors
    /// When the file cannot be opened or read.
    pub fn open(index: u32, path: &Path, delimiter: u8, has_header: bool) -> io::Result<InputFile> {
        let mut file = File::open(path).map_err(|err| with_path(err, path))?;
        let len = file.metadata().map_err(|err| with_path(err, path))?.len();
        let bom = {
            let mut head = [0u8; 3];
            let got = read_full(&mut file, &mut head).map_err(|err| with_path(err, path))?;
            if head[..got] == *BOM { 3 } else { 0 }
        };
        file.seek(SeekFrom::Start(bom as u64))
            .map_err(|err| with_path(err, path))?;

        // The first two non-empty lines: the header and a first record.
        let mut parser = LineParser::new(delimiter);
        let mut lines: Vec<(u64, ByteRecord)> = Vec::new();
        let mut offset = bom as u64;
        let mut line_number = 1;
        let mut after_header = None;
        let mut reader = io::BufReader::new(file);
        while lines.len() < 2 {
            let mut raw = Vec::new();
            let got = io::BufRead::read_until(&mut reader, b'\n', &mut raw)
                .map_err(|err| with_path(err, path))?;
            if got == 0 {
                break;
            }
            offset += got as u64;
            let text = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            // A line break is `\n`: a file whose lines end in a bare `\r`
            // would read as one line, so its rows would vanish into it.
            if lines.is_empty() && text.iter().filter(|&&byte| byte == b'\r').count() >= 2 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "its first line holds several bare carriage returns, as if its lines \
                     ended in \\r alone; convert them to \\n (tr '\\r' '\\n')",
                ));
            }
            if !text.is_empty() {
                let mut record = ByteRecord::new();
                parser.parse(text, &mut record);
                lines.push((line_number, record));
                if lines.len() == 1 {
                    after_header = Some((offset, line_number + 1));
                }
            }
            line_number += 1;
        }
        let mut lines = lines.into_iter();
        let (mut data_start, mut data_first_line) = (bom as u64, 1);
        let mut header = None;
        if has_header && let (Some((_, record)), Some((start, line))) = (lines.next(), after_header)
        {
            header = Some(record);
            (data_start, data_first_line) = (start, line);
        }
        let first_record = lines.next().map(|(_, record)| record);
        Ok(InputFile {
            index,
            path: path.to_path_buf(),
            len,
            data_start: data_start.min(len),
            data_first_line,
            header,
            first_record,
        })
    }

    /// The byte range `[start, end)` of worker `worker` among `peers`, cut
    /// after line breaks, with the line number at `start`.
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

/// Walks a file from its first data byte, counting line breaks, to find the
/// starts of lines.
struct BoundaryScanner {
    file: File,
    /// Bytes scanned so far, as a file offset.
    pos: u64,
    /// Line number of the line containing `pos`.
    line: u64,
    /// Whether `pos` starts a line.
    at_line_start: bool,
    len: u64,
}

impl BoundaryScanner {
    fn new(input: &InputFile) -> io::Result<BoundaryScanner> {
        let mut file = File::open(&input.path).map_err(|err| with_path(err, &input.path))?;
        file.seek(SeekFrom::Start(input.data_start))
            .map_err(|err| with_path(err, &input.path))?;
        Ok(BoundaryScanner {
            file,
            pos: input.data_start,
            line: input.data_first_line,
            at_line_start: true,
            len: input.len,
        })
    }

    /// The first line start at or after `target` (or the end of file). Leaves
    /// `self.line` at that line's number.
    fn boundary_at_or_after(&mut self, target: u64) -> io::Result<u64> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if self.pos >= target && self.at_line_start {
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
            let chunk = &buf[..got];
            // Below the target only the count of line breaks matters.
            let below = ((target.saturating_sub(self.pos)) as usize).min(got);
            self.line += memchr::memchr_iter(b'\n', &chunk[..below]).count() as u64;
            if below > 0 {
                self.at_line_start = chunk[below - 1] == b'\n';
            }
            if below < got {
                if self.at_line_start {
                    return self.stop_at(self.pos + below as u64);
                }
                if let Some(found) = memchr::memchr(b'\n', &chunk[below..]) {
                    self.line += 1;
                    self.at_line_start = true;
                    return self.stop_at(self.pos + (below + found + 1) as u64);
                }
                self.at_line_start = false;
            }
            self.pos += got as u64;
        }
    }

    fn stop_at(&mut self, position: u64) -> io::Result<u64> {
        self.pos = position;
        self.file.seek(SeekFrom::Start(position))?;
        Ok(position)
    }
}

/// One record as read: where it starts, its fields and its raw bytes.
pub struct Row<'a> {
    /// Line number of the record.
    pub line: u64,
    /// The fields.
    pub record: &'a ByteRecord,
    /// The raw text of the record, without its line break.
    pub raw: &'a [u8],
}

/// Reads the records of one share, a block at a time.
pub struct ShareReader {
    file: File,
    path: PathBuf,
    parser: LineParser,
    /// Bytes of the share not yet read from the file.
    remaining: u64,
    /// The current block: whole lines only.
    block: Vec<u8>,
    /// Bytes read from the file that belong to the next block (a partial line).
    carry: Vec<u8>,
    /// Line number at the start of the current block.
    block_line: u64,
    record: ByteRecord,
}

impl ShareReader {
    /// Opens `input` at the start of `share`.
    ///
    /// # Errors
    /// When the file cannot be opened or positioned; the error names it.
    pub fn new(input: &InputFile, share: Share, delimiter: u8) -> io::Result<ShareReader> {
        let mut file = File::open(&input.path).map_err(|err| with_path(err, &input.path))?;
        file.seek(SeekFrom::Start(share.start))
            .map_err(|err| with_path(err, &input.path))?;
        Ok(ShareReader {
            file,
            path: input.path.clone(),
            parser: LineParser::new(delimiter),
            remaining: share.end - share.start,
            block: Vec::new(),
            carry: Vec::new(),
            block_line: share.first_line,
            record: ByteRecord::new(),
        })
    }

    /// Reads the next block of whole lines and calls `each` on every record
    /// in it. Returns `false` once the share is exhausted.
    ///
    /// # Errors
    /// When reading the file fails; the error names it.
    pub fn next_block(&mut self, mut each: impl FnMut(Row<'_>)) -> io::Result<bool> {
        if !self
            .fill_block()
            .map_err(|err| with_path(err, &self.path))?
        {
            return Ok(false);
        }
        let (parser, record) = (&mut self.parser, &mut self.record);
        let breaks = for_each_line(&self.block, self.block_line, |line, raw| {
            parser.parse(raw, record);
            each(Row { line, record, raw });
        });
        self.block_line += breaks;
        Ok(true)
    }

    /// Moves the next run of whole lines into `self.block`.
    fn fill_block(&mut self) -> io::Result<bool> {
        self.block.clear();
        std::mem::swap(&mut self.block, &mut self.carry);
        loop {
            // Read at least a block's worth; more when one line is longer.
            if self.remaining > 0 {
                let want = (self.remaining as usize).min(BLOCK_BYTES);
                let old = self.block.len();
                self.block.resize(old + want, 0);
                let got = read_full(&mut self.file, &mut self.block[old..])?;
                if got < want {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was being read; rerun once it is complete",
                    ));
                }
                self.remaining -= got as u64;
            }
            if self.remaining == 0 {
                return Ok(!self.block.is_empty());
            }
            if let Some(last) = memchr::memrchr(b'\n', &self.block) {
                self.carry.extend_from_slice(&self.block[last + 1..]);
                self.block.truncate(last + 1);
                return Ok(true);
            }
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
    fn a_file_with_bare_carriage_return_line_ends_is_refused() {
        let path = temp_file("cr.csv", b"a,b\r1,2\r3,4\r");
        let error = InputFile::open(0, &path, b',', true).err().unwrap();
        assert!(
            error.to_string().contains("bare carriage returns"),
            "{error}"
        );
        // One bare CR inside a field is content, not a line break.
        let path = temp_file("one-cr.csv", b"a,b\n1,x\ry\n");
        assert_eq!(read_all(&path, true, 1).len(), 1);
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
    fn line_breaks_end_records_even_after_a_stray_quote() {
        let mut text = String::new();
        for i in 0..300 {
            // A stray quote mid-field, an unclosed quote, and a quoted delimiter.
            text.push_str(&format!("{i},x\"y,\"open {i}\n{i},\"a,b\",c\n"));
        }
        let path = temp_file("quoted.csv", text.as_bytes());
        for peers in [1, 2, 3, 9] {
            let rows = read_all(&path, false, peers);
            assert_eq!(rows.len(), 600, "peers = {peers}");
            for (i, (line, _)) in rows.iter().enumerate() {
                assert_eq!(*line, 1 + i as u64);
            }
        }
        let mut parser = LineParser::new(b',');
        let mut record = ByteRecord::new();
        parser.parse(b"7,x\"y,\"open 7", &mut record);
        assert_eq!(record, ByteRecord::from(vec!["7", "x\"y", "open 7"]));
        parser.parse(b"1,\"a,b\",\"say \"\"hi\"\"\"", &mut record);
        assert_eq!(record, ByteRecord::from(vec!["1", "a,b", "say \"hi\""]));
    }

    #[test]
    fn a_bare_carriage_return_is_field_content_not_a_line_end() {
        let mut parser = LineParser::new(b',');
        let mut record = ByteRecord::new();
        parser.parse(b"1,2\r3,4", &mut record);
        assert_eq!(record, ByteRecord::from(vec!["1", "2\r3", "4"]));
    }

    #[test]
    fn a_line_longer_than_a_block_is_read_whole() {
        let long = "9".repeat(BLOCK_BYTES + 100);
        let text = format!("1,2\n{long},3\n4,5");
        let path = temp_file("long.csv", text.as_bytes());
        for peers in [1, 2] {
            let rows = read_all(&path, false, peers);
            assert_eq!(rows.len(), 3, "peers = {peers}");
            assert_eq!(rows[1].1.len(), long.len() + 2);
            assert_eq!((rows[2].0, rows[2].1.as_str()), (3, "4,5"));
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
