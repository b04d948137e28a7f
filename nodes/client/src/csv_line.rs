//! One CSV line at a time, with a parser built once.
//!
//! Building a `csv` reader per line costs far more than the line (a fresh
//! state machine and an 8 KiB buffer): the spool's replay spent 90% of its
//! time there. [`CsvLine`] keeps one `csv_core` reader and its buffers.

/// Splits single CSV lines (RFC 4180 quoting) into fields.
#[derive(Debug)]
pub struct CsvLine {
    reader: csv_core::Reader,
    output: Vec<u8>,
    ends: Vec<usize>,
}

impl Default for CsvLine {
    fn default() -> Self {
        Self {
            // Not `csv_core::Reader::default()`: that one has no delimiter or quote.
            reader: csv_core::Reader::new(),
            output: Vec::new(),
            ends: vec![0; 16],
        }
    }
}

/// The fields of one line, borrowed from the [`CsvLine`] that split it.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    output: &'a [u8],
    ends: &'a [usize],
}

impl<'a> Fields<'a> {
    /// How many fields the line has.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the line has no field.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i` as bytes.
    pub fn bytes(&self, i: usize) -> Option<&'a [u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.output.get(start..end)
    }

    /// Field `i` as text.
    pub fn text(&self, i: usize) -> Result<&'a str, String> {
        let bytes = self
            .bytes(i)
            .ok_or_else(|| format!("no column {}", i + 1))?;
        std::str::from_utf8(bytes).map_err(|_| format!("column {} is not UTF-8", i + 1))
    }

    /// Every field as text.
    pub fn texts(&self) -> Result<Vec<&'a str>, String> {
        (0..self.len()).map(|i| self.text(i)).collect()
    }
}

impl CsvLine {
    /// Splits one line (with or without its line break).
    pub fn split(&mut self, line: &[u8]) -> Result<Fields<'_>, String> {
        use csv_core::ReadRecordResult;
        self.reader.reset();
        self.output.clear();
        // Unescaped fields are never longer than the escaped line.
        self.output.resize(line.len() + 1, 0);
        let (mut input, mut written, mut fields) = (line, 0, 0);
        loop {
            // Field ends are positions in the whole output of the record.
            let (result, nin, nout, nend) = self.reader.read_record(
                input,
                &mut self.output[written..],
                &mut self.ends[fields..],
            );
            input = &input[nin..];
            written += nout;
            fields += nend;
            match result {
                // The next call, with nothing left, tells the reader the line ended.
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                ReadRecordResult::Record => {
                    return Ok(Fields {
                        output: &self.output[..written],
                        ends: &self.ends[..fields],
                    });
                }
                ReadRecordResult::OutputFull | ReadRecordResult::End => {
                    return Err("not a CSV line".to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quoted_fields_and_is_reusable() {
        let mut csv = CsvLine::default();
        let fields = csv
            .split(b"1,\"Wien, Stadt\",\"say \"\"hi\"\"\",\n")
            .expect("line");
        assert_eq!(
            fields.texts().expect("utf8"),
            vec!["1", "Wien, Stadt", "say \"hi\"", ""]
        );
        let fields = csv.split(b"a,b").expect("line");
        assert_eq!(fields.texts().expect("utf8"), vec!["a", "b"]);
        let wide: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let fields = csv.split(wide.join(",").as_bytes()).expect("40 columns");
        assert_eq!(fields.len(), 40);
        assert_eq!(fields.text(39), Ok("39"));
    }
}
