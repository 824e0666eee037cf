//! Reading a SIF: [`SifReader::new`] measures the image, decodes the header and the descriptor
//! table and checks every count, offset and length against the image length before anything is
//! allocated or read on its behalf; afterwards objects are read through [`ObjectReader`], a
//! window that cannot leave the object's bytes.
//!
//! What the reader accepts is what sylabs/sif writes (`siftool new/add/del`, `singularity
//! build`, `singularity sign`): it is stricter than sylabs/sif's `LoadContainer`, which only
//! checks magic and version and lets later reads fail. Rejected, each with its own message: a
//! file shorter than the header, a bad magic or version, a descriptor table that is not
//! `585 × total` bytes, overlaps the header or ends past the file, more than
//! [`MAX_DESCRIPTORS`] slots, a data section or object past the end of the file, negative
//! offsets or sizes, objects overlapping the header, the table or each other, duplicate or zero
//! IDs, and a free-slot count that disagrees with the table.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::format::{
    DESCRIPTOR_LEN, DataType, Descriptor, GlobalHeader, HEADER_LEN, MAGIC, ObjectMetadata,
    PartType, VERSION,
};
use super::{CopyError, Result, SifError, copy_stream, seek_window};

/// The largest descriptor table the reader accepts, in slots. sylabs/sif creates 48; this bound
/// keeps a hostile header from making the reader hold more than ~40 MB of descriptors.
pub const MAX_DESCRIPTORS: u64 = 65_536;

/// Descriptors decoded per read of the table, so the table is read in a few large reads.
const DESCRIPTORS_PER_READ: usize = 64;

/// A validated SIF image over any `Read + Seek`.
#[derive(Debug)]
pub struct SifReader<R> {
    inner: R,
    /// Length of the image, bytes, measured once by seeking to its end.
    image_len: u64,
    header: GlobalHeader,
    /// The used descriptors, in slot order (the order `siftool list` prints).
    objects: Vec<Descriptor>,
}

impl<R: Read + Seek> SifReader<R> {
    /// Validates the image in `inner` (see the module documentation for every check) and keeps
    /// its header and used descriptors. The image is the whole of `inner`, from offset 0 to its
    /// end.
    ///
    /// # Errors
    /// [`SifError::TruncatedHeader`], [`SifError::BadMagic`], [`SifError::UnsupportedVersion`],
    /// [`SifError::MalformedHeader`], [`SifError::MalformedDescriptor`] for invalid images;
    /// [`SifError::Seek`], [`SifError::ReadHeader`], [`SifError::ReadDescriptors`] when `inner`
    /// fails.
    pub fn new(mut inner: R) -> Result<Self> {
        let image_len = inner.seek(SeekFrom::End(0)).map_err(SifError::Seek)?;
        if image_len < HEADER_LEN as u64 {
            return Err(SifError::TruncatedHeader { len: image_len });
        }
        inner.seek(SeekFrom::Start(0)).map_err(SifError::Seek)?;
        let mut bytes = [0; HEADER_LEN];
        inner.read_exact(&mut bytes).map_err(SifError::ReadHeader)?;
        let header = GlobalHeader::decode(&bytes);
        let table = check_header(&header, image_len)?;

        inner
            .seek(SeekFrom::Start(table.offset))
            .map_err(SifError::Seek)?;
        let mut objects = Vec::new();
        let mut chunk = vec![0; DESCRIPTORS_PER_READ * DESCRIPTOR_LEN];
        let mut remaining = table.slots;
        while remaining > 0 {
            let count = remaining.min(DESCRIPTORS_PER_READ as u64) as usize;
            let buf = &mut chunk[..count * DESCRIPTOR_LEN];
            inner.read_exact(buf).map_err(SifError::ReadDescriptors)?;
            for raw in buf.chunks_exact(DESCRIPTOR_LEN) {
                let raw: &[u8; DESCRIPTOR_LEN] = raw.try_into().map_err(|_| {
                    SifError::ReadDescriptors(io::Error::other("descriptor chunk of wrong size"))
                })?;
                let descriptor = Descriptor::decode(raw);
                if descriptor.used {
                    objects.push(descriptor);
                }
            }
            remaining -= count as u64;
        }
        check_objects(&header, &table, &objects, image_len)?;
        Ok(Self {
            inner,
            image_len,
            header,
            objects,
        })
    }

    /// The global header.
    pub fn header(&self) -> &GlobalHeader {
        &self.header
    }

    /// Length of the image, bytes.
    pub fn image_len(&self) -> u64 {
        self.image_len
    }

    /// The objects (used descriptors) in slot order, as `siftool list` shows them.
    pub fn objects(&self) -> &[Descriptor] {
        &self.objects
    }

    /// The object with ID `id`.
    ///
    /// # Errors
    /// [`SifError::ObjectNotFound`].
    pub fn object(&self, id: u32) -> Result<&Descriptor> {
        self.objects
            .iter()
            .find(|d| d.id == id)
            .ok_or(SifError::ObjectNotFound { id })
    }

    /// The first object of type `data_type` named `name` (how Singularity finds
    /// `inspect-metadata.json`).
    pub fn object_by_name(&self, data_type: DataType, name: &[u8]) -> Option<&Descriptor> {
        self.objects
            .iter()
            .find(|d| d.data_type == data_type && d.name() == name)
    }

    /// The primary system partition, the one Singularity mounts, if there is one.
    pub fn primary_partition(&self) -> Option<&Descriptor> {
        self.objects.iter().find(|d| {
            matches!(
                d.metadata(),
                ObjectMetadata::Partition { part_type, .. } if part_type == PartType::PRIMARY_SYSTEM
            )
        })
    }

    /// A `Read + Seek` window over the data of object `id`: offset 0 is the object's first byte
    /// and reads stop at its last one.
    ///
    /// # Errors
    /// [`SifError::ObjectNotFound`], [`SifError::Seek`].
    pub fn object_reader(&mut self, id: u32) -> Result<ObjectReader<'_, R>> {
        let descriptor = self.object(id)?;
        let (start, len) = (descriptor.data_offset(), descriptor.data_len());
        self.inner
            .seek(SeekFrom::Start(start))
            .map_err(SifError::Seek)?;
        Ok(ObjectReader {
            inner: &mut self.inner,
            start,
            len,
            pos: 0,
        })
    }

    /// Loads the data of object `id` into memory, refusing objects larger than `limit` bytes.
    ///
    /// # Errors
    /// [`SifError::ObjectNotFound`], [`SifError::ObjectTooLarge`], [`SifError::ReadObject`].
    pub fn read_object(&mut self, id: u32, limit: u64) -> Result<Vec<u8>> {
        let size = self.object(id)?.data_len();
        if size > limit {
            return Err(SifError::ObjectTooLarge { id, size, limit });
        }
        let mut data = Vec::new();
        self.object_reader(id)?
            .read_to_end(&mut data)
            .map_err(|source| SifError::ReadObject { id, source })?;
        Ok(data)
    }

    /// Copies the data of object `id` to `out` without holding it in memory; returns the
    /// number of bytes copied.
    ///
    /// # Errors
    /// [`SifError::ObjectNotFound`], [`SifError::ReadObject`], [`SifError::CopyObject`].
    pub fn copy_object<W: Write>(&mut self, id: u32, out: &mut W) -> Result<u64> {
        let mut reader = self.object_reader(id)?;
        let copied = copy_stream(&mut reader, out).map_err(|e| match e {
            CopyError::Read(source) => SifError::ReadObject { id, source },
            CopyError::Write(source) => SifError::CopyObject { id, source },
        })?;
        if copied != reader.len {
            // The image shrank under us after validation.
            return Err(SifError::ReadObject {
                id,
                source: io::Error::from(io::ErrorKind::UnexpectedEof),
            });
        }
        Ok(copied)
    }

    /// Gives the underlying reader back.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// A window over one object's data, returned by [`SifReader::object_reader`].
#[derive(Debug)]
pub struct ObjectReader<'a, R> {
    inner: &'a mut R,
    /// File offset of the object's first byte.
    start: u64,
    /// Length of the object, bytes.
    len: u64,
    /// Cursor relative to `start`; may be past `len` after a seek, then reads return 0.
    pos: u64,
}

impl<R> ObjectReader<'_, R> {
    /// Length of the object, bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<R: Read> Read for ObjectReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for ObjectReader<'_, R> {
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        let pos = seek_window(&mut *self.inner, self.start, self.pos, self.len, target)?;
        self.pos = pos;
        Ok(pos)
    }
}

/// Where the descriptor table is, once the header has been checked.
struct Table {
    /// File offset, bytes.
    offset: u64,
    /// Number of slots.
    slots: u64,
    /// End offset (exclusive), bytes.
    end: u64,
}

/// Checks the header against itself and the image length; returns the table's extent.
fn check_header(header: &GlobalHeader, image_len: u64) -> Result<Table> {
    if header.magic != MAGIC {
        return Err(SifError::BadMagic {
            found: header.magic,
        });
    }
    if header.version != VERSION {
        return Err(SifError::UnsupportedVersion {
            found: header.version,
        });
    }
    let malformed = |reason: String| SifError::MalformedHeader { reason };
    let non_negative = |name: &str, value: i64| {
        u64::try_from(value).map_err(|_| malformed(format!("{name} is negative ({value})")))
    };
    let slots = non_negative("descriptors total", header.descriptors_total)?;
    let free = non_negative("descriptors free", header.descriptors_free)?;
    let offset = non_negative("descriptors offset", header.descriptors_offset)?;
    let size = non_negative("descriptors size", header.descriptors_size)?;
    let data_offset = non_negative("data offset", header.data_offset)?;
    let data_size = non_negative("data size", header.data_size)?;

    if slots > MAX_DESCRIPTORS {
        return Err(malformed(format!(
            "{slots} descriptor slots, more than the {MAX_DESCRIPTORS} supported"
        )));
    }
    if free > slots {
        return Err(malformed(format!("{free} free descriptors out of {slots}")));
    }
    // Cannot overflow: slots is at most 2^16.
    let table_len = slots * DESCRIPTOR_LEN as u64;
    if size != table_len {
        return Err(malformed(format!(
            "descriptors size {size} is not {slots} × {DESCRIPTOR_LEN} bytes"
        )));
    }
    if offset < HEADER_LEN as u64 {
        return Err(malformed(format!(
            "descriptor table at {offset} overlaps the global header"
        )));
    }
    let end = offset
        .checked_add(table_len)
        .filter(|&end| end <= image_len)
        .ok_or_else(|| {
            malformed(format!(
                "descriptor table {offset}+{table_len} ends past the end of the {image_len}-byte image"
            ))
        })?;
    // An empty data section may start past the end: images made by the sif v1 library (2020)
    // end at their descriptor table while their data offset says 32768.
    if data_offset
        .checked_add(data_size)
        .is_none_or(|data_end| data_size > 0 && data_end > image_len)
    {
        return Err(malformed(format!(
            "data section {data_offset}+{data_size} ends past the end of the {image_len}-byte image"
        )));
    }
    Ok(Table { offset, slots, end })
}

/// Checks the used descriptors against the header, the table, the image and each other.
fn check_objects(
    header: &GlobalHeader,
    table: &Table,
    objects: &[Descriptor],
    image_len: u64,
) -> Result<()> {
    // check_header has made these non-negative.
    let data_start = header.data_offset as u64;
    let data_end = data_start + header.data_size as u64;
    let used = objects.len() as u64;
    let free = header.descriptors_free as u64;
    if used + free != table.slots {
        return Err(SifError::MalformedHeader {
            reason: format!(
                "{free} free descriptors but {used} of {} slots in use",
                table.slots
            ),
        });
    }

    let mut ids: Vec<u32> = objects.iter().map(|d| d.id).collect();
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(SifError::MalformedDescriptor {
            id: pair[0],
            reason: "object ID used twice".into(),
        });
    }

    let mut extents = Vec::with_capacity(objects.len());
    for d in objects {
        let malformed = |reason: String| SifError::MalformedDescriptor { id: d.id, reason };
        if d.id == 0 {
            return Err(malformed("object ID 0 is reserved".into()));
        }
        let offset = u64::try_from(d.offset)
            .map_err(|_| malformed(format!("offset is negative ({})", d.offset)))?;
        let size = u64::try_from(d.size)
            .map_err(|_| malformed(format!("size is negative ({})", d.size)))?;
        let end = offset
            .checked_add(size)
            .filter(|&end| end <= image_len)
            .ok_or_else(|| {
                malformed(format!(
                    "data {offset}+{size} ends past the end of the {image_len}-byte image"
                ))
            })?;
        if offset < data_start || end > data_end {
            return Err(malformed(format!(
                "data {offset}..{end} lies outside the data section {data_start}..{data_end}"
            )));
        }
        // Empty objects occupy no bytes, so they cannot collide with anything.
        if size > 0 {
            if offset < HEADER_LEN as u64 {
                return Err(malformed("data overlaps the global header".into()));
            }
            if offset < table.end && table.offset < end {
                return Err(malformed("data overlaps the descriptor table".into()));
            }
            extents.push((offset, end, d.id));
        }
    }
    extents.sort_unstable();
    for pair in extents.windows(2) {
        let ((_, first_end, first), (second_start, _, second)) = (pair[0], pair[1]);
        if second_start < first_end {
            return Err(SifError::MalformedDescriptor {
                id: second,
                reason: format!("data overlaps object {first}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::sif::format::{Arch, DEFAULT_DESCRIPTORS_OFFSET};
    use crate::sif::{CreateOptions, ObjectInput, SifWriter, write_singularity_image};

    /// A three-object image like `singularity build` writes, and its length.
    fn image() -> Vec<u8> {
        write_singularity_image(
            Cursor::new(Vec::new()),
            CreateOptions::default(),
            b"Bootstrap: scratch\n",
            &[("inspect-metadata.json", b"{}")],
            Arch::AMD64,
            &[7u8; 5000][..],
        )
        .expect("write")
        .into_inner()
    }

    fn read(bytes: Vec<u8>) -> Result<SifReader<Cursor<Vec<u8>>>> {
        SifReader::new(Cursor::new(bytes))
    }

    fn with_header(edit: impl FnOnce(&mut GlobalHeader)) -> Vec<u8> {
        let mut bytes = image();
        let mut header = GlobalHeader::decode(bytes[..HEADER_LEN].try_into().expect("header"));
        edit(&mut header);
        bytes[..HEADER_LEN].copy_from_slice(&header.encode());
        bytes
    }

    fn with_descriptor(slot: usize, edit: impl FnOnce(&mut Descriptor)) -> Vec<u8> {
        let mut bytes = image();
        let at = DEFAULT_DESCRIPTORS_OFFSET as usize + slot * DESCRIPTOR_LEN;
        let raw = &mut bytes[at..at + DESCRIPTOR_LEN];
        let mut d = Descriptor::decode((&*raw).try_into().expect("descriptor"));
        edit(&mut d);
        raw.copy_from_slice(&d.encode());
        bytes
    }

    fn header_error(bytes: Vec<u8>) -> String {
        match read(bytes) {
            Err(SifError::MalformedHeader { reason }) => reason,
            other => panic!("expected a malformed header, got {:?}", other.map(|_| "Ok")),
        }
    }

    fn descriptor_error(bytes: Vec<u8>) -> (u32, String) {
        match read(bytes) {
            Err(SifError::MalformedDescriptor { id, reason }) => (id, reason),
            other => panic!(
                "expected a malformed descriptor, got {:?}",
                other.map(|_| "Ok")
            ),
        }
    }

    #[test]
    fn reads_a_valid_image() {
        let mut reader = read(image()).expect("valid");
        assert_eq!(reader.objects().len(), 3);
        assert_eq!(
            reader
                .object_by_name(DataType::GENERIC_JSON, b"inspect-metadata.json")
                .map(|d| d.id),
            Some(2)
        );
        assert!(matches!(
            reader.object(4),
            Err(SifError::ObjectNotFound { id: 4 })
        ));
        assert!(matches!(
            reader.read_object(3, 4999),
            Err(SifError::ObjectTooLarge {
                id: 3,
                size: 5000,
                limit: 4999
            })
        ));
        let mut out = Vec::new();
        assert_eq!(reader.copy_object(3, &mut out).expect("copy"), 5000);
        assert_eq!(out, [7u8; 5000]);
    }

    #[test]
    fn object_reader_never_leaves_its_object() {
        let mut reader = read(image()).expect("valid");
        let mut object = reader.object_reader(2).expect("object");
        assert_eq!(object.len(), 2);
        let mut buf = [0; 64];
        assert_eq!(object.read(&mut buf).expect("read"), 2);
        assert_eq!(&buf[..2], b"{}");
        assert_eq!(object.read(&mut buf).expect("eof"), 0);
        object.seek(SeekFrom::Start(1)).expect("seek");
        assert_eq!(object.read(&mut buf).expect("read"), 1);
        object.seek(SeekFrom::End(10)).expect("seek past end");
        assert_eq!(object.read(&mut buf).expect("past end"), 0);
        assert!(object.seek(SeekFrom::Current(-100)).is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = image();
        for len in 0..full.len() {
            let result = read(full[..len].to_vec());
            assert!(result.is_err(), "a {len}-byte prefix was accepted");
            if len < HEADER_LEN {
                assert!(matches!(result, Err(SifError::TruncatedHeader { .. })));
            }
        }
    }

    #[test]
    fn rejects_bad_magic_and_version() {
        let mut bytes = image();
        bytes[0x20] = b's';
        assert!(matches!(read(bytes), Err(SifError::BadMagic { .. })));
        let mut bytes = image();
        bytes[0x2B] = b'2';
        assert!(matches!(
            read(bytes),
            Err(SifError::UnsupportedVersion { found }) if &found == b"02\0"
        ));
    }

    #[test]
    fn rejects_descriptor_tables_the_file_cannot_hold() {
        let reason = header_error(with_header(|h| {
            h.descriptors_total = MAX_DESCRIPTORS as i64 + 1;
            h.descriptors_size = h.descriptors_total * DESCRIPTOR_LEN as i64;
        }));
        assert!(reason.contains("more than the 65536 supported"), "{reason}");
        let reason = header_error(with_header(|h| {
            h.descriptors_total = 1000;
            h.descriptors_size = 1000 * DESCRIPTOR_LEN as i64;
        }));
        assert!(reason.contains("ends past the end"), "{reason}");
        let reason = header_error(with_header(|h| h.descriptors_size -= 1));
        assert!(reason.contains("is not 48 × 585"), "{reason}");
        let reason = header_error(with_header(|h| h.descriptors_offset = 64));
        assert!(reason.contains("overlaps the global header"), "{reason}");
        let reason = header_error(with_header(|h| h.descriptors_offset = i64::MAX));
        assert!(reason.contains("ends past the end"), "{reason}");
        let reason = header_error(with_header(|h| h.descriptors_total = -1));
        assert!(reason.contains("descriptors total is negative"), "{reason}");
    }

    #[test]
    fn rejects_inconsistent_counts_and_data_sections() {
        let reason = header_error(with_header(|h| h.descriptors_free = 49));
        assert!(reason.contains("49 free descriptors out of 48"), "{reason}");
        let reason = header_error(with_header(|h| h.descriptors_free = 46));
        assert!(reason.contains("but 3 of 48 slots in use"), "{reason}");
        let reason = header_error(with_header(|h| h.data_size += 1));
        assert!(reason.contains("data section"), "{reason}");
        let reason = header_error(with_header(|h| h.data_offset = i64::MAX));
        assert!(reason.contains("data section"), "{reason}");
        let reason = header_error(with_header(|h| h.data_size = -5));
        assert!(reason.contains("data size is negative"), "{reason}");
    }

    #[test]
    fn rejects_objects_out_of_bounds() {
        let (id, reason) = descriptor_error(with_descriptor(2, |d| d.offset += 1));
        assert_eq!(id, 3);
        assert!(reason.contains("ends past the end"), "{reason}");
        let (_, reason) = descriptor_error(with_descriptor(2, |d| d.size = i64::MAX));
        assert!(reason.contains("ends past the end"), "{reason}");
        let (_, reason) = descriptor_error(with_descriptor(0, |d| d.offset = -1));
        assert!(reason.contains("offset is negative"), "{reason}");
        let (_, reason) = descriptor_error(with_descriptor(0, |d| d.size = -1));
        assert!(reason.contains("size is negative"), "{reason}");
        let (_, reason) = descriptor_error(with_descriptor(0, |d| d.offset = 4096));
        assert!(reason.contains("outside the data section"), "{reason}");
    }

    #[test]
    fn rejects_objects_overlapping_the_table_or_each_other() {
        // A data section that starts at the header, so only the table check can catch it.
        let bytes = with_header(|h| {
            h.data_size += h.data_offset - HEADER_LEN as i64;
            h.data_offset = HEADER_LEN as i64;
        });
        let (id, reason) = descriptor_error({
            let mut b = bytes;
            let at = DEFAULT_DESCRIPTORS_OFFSET as usize;
            let mut d = Descriptor::decode(b[at..at + DESCRIPTOR_LEN].try_into().expect("d"));
            d.offset = 4090;
            b[at..at + DESCRIPTOR_LEN].copy_from_slice(&d.encode());
            b
        });
        assert_eq!(id, 1);
        assert!(reason.contains("overlaps the descriptor table"), "{reason}");
        let (id, reason) = descriptor_error(with_descriptor(1, |d| d.offset -= 1));
        assert_eq!(id, 2);
        assert!(reason.contains("overlaps object 1"), "{reason}");
        // An empty object may sit anywhere inside the data section, even inside another one.
        let bytes = with_descriptor(1, |d| {
            d.offset -= 5;
            d.size = 0;
        });
        assert!(read(bytes).is_ok());
    }

    #[test]
    fn rejects_bad_ids() {
        let (id, reason) = descriptor_error(with_descriptor(1, |d| d.id = 1));
        assert_eq!(id, 1);
        assert!(reason.contains("used twice"), "{reason}");
        let (id, reason) = descriptor_error(with_descriptor(1, |d| d.id = 0));
        assert_eq!(id, 0);
        assert!(reason.contains("reserved"), "{reason}");
    }

    #[test]
    fn an_empty_data_section_may_start_past_the_end() {
        // The shape of sylabs/singularity `test/images/empty.sif` (sif v1): 48 free slots, data
        // offset 32768, file ending with the table at 32176.
        let mut bytes = SifWriter::new(Cursor::new(Vec::new()), CreateOptions::default())
            .expect("new")
            .finish()
            .expect("finish")
            .into_inner();
        let mut header = GlobalHeader::decode(bytes[..HEADER_LEN].try_into().expect("header"));
        header.data_offset = 32768;
        bytes[..HEADER_LEN].copy_from_slice(&header.encode());
        assert_eq!(bytes.len(), 32176);
        assert!(
            read(bytes.clone())
                .expect("empty v1 image")
                .objects()
                .is_empty()
        );
        header.data_size = 1;
        bytes[..HEADER_LEN].copy_from_slice(&header.encode());
        assert!(header_error(bytes).contains("data section"));
    }

    #[test]
    fn empty_images_and_unused_slots_are_fine() {
        let bytes = SifWriter::new(Cursor::new(Vec::new()), CreateOptions::default())
            .expect("new")
            .finish()
            .expect("finish")
            .into_inner();
        let reader = read(bytes).expect("empty image");
        assert!(reader.objects().is_empty());
        assert!(reader.primary_partition().is_none());
        // Garbage in an unused slot is ignored, as sylabs/sif ignores it.
        let bytes = with_descriptor(10, |d| {
            d.offset = -1;
            d.id = 1;
        });
        assert_eq!(read(bytes).expect("unused slot").objects().len(), 3);
    }

    #[test]
    fn flipped_bytes_never_panic() {
        let full = image();
        // Every byte of the header and of the first two descriptors, each set to three values.
        let positions = (0..HEADER_LEN).chain(4096..4096 + 2 * DESCRIPTOR_LEN);
        for at in positions {
            for value in [0x00, 0x80, 0xFF] {
                let mut bytes = full.clone();
                bytes[at] = value;
                if let Ok(mut reader) = read(bytes) {
                    let ids: Vec<u32> = reader.objects().iter().map(|d| d.id).collect();
                    for id in ids {
                        let _ = reader.read_object(id, 1 << 20);
                    }
                }
            }
        }
        let mut writer =
            SifWriter::new(Cursor::new(Vec::new()), CreateOptions::default()).expect("new");
        writer
            .add_object(ObjectInput::deffile(), &b""[..])
            .expect("empty object");
        assert!(read(writer.finish().expect("finish").into_inner()).is_ok());
    }
}
