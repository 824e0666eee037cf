//! Writing a SIF: [`SifWriter`] reserves the header and the descriptor table, then appends data
//! objects one after the other, each at the next offset its alignment allows, and writes the
//! header and the descriptors last, once every size is known (sylabs/sif `createContainer`).
//!
//! Streaming: object data never has to be in memory or have a known length. An object comes
//! either from a `Read` ([`SifWriter::add_object`], copied in 1 MiB pieces) or is produced in
//! place through [`SifWriter::begin_object`], a `Write + Seek` window into the image that a
//! SquashFS writer can write to directly, seeking back to patch its superblock. The price is
//! that the output must be seekable (a file): the header at offset 0 records sizes known only at
//! the end. To stream a SIF over a socket, write it to a file first.
//!
//! Deterministic by default: nil UUID, sylabs/sif's deterministic time, no randomness; two runs
//! with the same inputs give the same bytes. Every gap (header padding, the unused table, the
//! alignment gaps) is written as zeros, so the output does not depend on what the writer's
//! target held before; the target should be empty, as the writer never truncates it.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::format::{
    Arch, DEFAULT_DESCRIPTOR_CAPACITY, DEFAULT_DESCRIPTORS_OFFSET, DEFAULT_GROUP, DESCRIPTOR_LEN,
    DETERMINISTIC_TIME, DataType, Descriptor, ENTITY_LEN, FsType, GROUP_MASK, GlobalHeader,
    HEADER_LEN, HashType, LAUNCH_SCRIPT_LEN, Link, MAGIC, NAME_LEN, ObjectMetadata,
    PARTITION_ALIGNMENT, PartType, SINGULARITY_LAUNCH_SCRIPT, VERSION,
};
use super::reader::MAX_DESCRIPTORS;
use super::{CopyError, Result, SifError, copy_stream, seek_window};

/// Parameters of a new image. `Default` gives what `singularity build` writes except for the
/// ID and the time, which are deterministic until set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// The `#!` line at offset 0, shorter than 32 bytes; default
    /// [`SINGULARITY_LAUNCH_SCRIPT`], empty for none (what `siftool new` writes).
    pub launch_script: Vec<u8>,
    /// Image UUID, 16 raw bytes; default all zero. `singularity build` uses a random v4 UUID:
    /// pass one in.
    pub id: [u8; 16],
    /// Creation time of the image and of every object, Unix seconds; default
    /// [`DETERMINISTIC_TIME`].
    pub time: i64,
    /// Descriptor slots, at most [`MAX_DESCRIPTORS`]; default 48.
    pub descriptor_capacity: u32,
    /// File offset of the descriptor table, bytes, at least 128; default 4096.
    pub descriptors_offset: u64,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            launch_script: SINGULARITY_LAUNCH_SCRIPT.as_bytes().to_vec(),
            id: [0; 16],
            time: DETERMINISTIC_TIME,
            descriptor_capacity: DEFAULT_DESCRIPTOR_CAPACITY,
            descriptors_offset: DEFAULT_DESCRIPTORS_OFFSET,
        }
    }
}

/// Describes one object to add (sylabs/sif `DescriptorInput`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInput {
    /// Kind of object.
    pub data_type: DataType,
    /// Group, `None` for no group; group IDs are 1 to `0x0FFFFFFF`.
    pub group: Option<u32>,
    /// Link to another object or group.
    pub link: Link,
    /// Name, at most 128 bytes.
    pub name: Vec<u8>,
    /// Type-specific metadata; required for partitions, must fit `data_type`.
    pub metadata: ObjectMetadata,
    /// Alignment of the data's file offset, bytes; 0 or 1 for none.
    pub alignment: u64,
}

impl ObjectInput {
    /// An unnamed, unaligned object in group 1 without link or metadata.
    pub fn new(data_type: DataType) -> Self {
        Self {
            data_type,
            group: Some(DEFAULT_GROUP),
            link: Link::None,
            name: Vec::new(),
            metadata: ObjectMetadata::None,
            alignment: 0,
        }
    }

    /// The definition file, as `singularity build` writes it (unnamed, group 1).
    pub fn deffile() -> Self {
        Self::new(DataType::DEFFILE)
    }

    /// A generic JSON object found by `name` (`inspect-metadata.json`, `oci-config.json`).
    pub fn generic_json(name: &str) -> Self {
        Self {
            name: name.as_bytes().to_vec(),
            ..Self::new(DataType::GENERIC_JSON)
        }
    }

    /// A partition, aligned to 4 KiB, in group 1.
    pub fn partition(fs_type: FsType, part_type: PartType, arch: Arch) -> Self {
        Self {
            metadata: ObjectMetadata::Partition {
                fs_type,
                part_type,
                arch,
            },
            alignment: PARTITION_ALIGNMENT,
            ..Self::new(DataType::PARTITION)
        }
    }

    /// The SquashFS primary system partition Singularity runs.
    pub fn primary_system_partition(arch: Arch) -> Self {
        Self::partition(FsType::SQUASHFS, PartType::PRIMARY_SYSTEM, arch)
    }

    /// A signature over every object of `group`, as `singularity sign` adds it: no group of its
    /// own, linked to the group, the signer's `fingerprint` (at most 256 bytes, empty for DSSE)
    /// in the entity field.
    ///
    /// # Errors
    /// [`SifError::InvalidParameter`] if the fingerprint is longer than 256 bytes.
    pub fn group_signature(group: u32, hash_type: HashType, fingerprint: &[u8]) -> Result<Self> {
        let mut entity = [0; ENTITY_LEN];
        entity
            .get_mut(..fingerprint.len())
            .ok_or_else(|| invalid(format!("fingerprint of {} bytes", fingerprint.len())))?
            .copy_from_slice(fingerprint);
        Ok(Self {
            group: None,
            link: Link::Group(group),
            metadata: ObjectMetadata::Signature {
                hash_type,
                entity: Box::new(entity),
            },
            ..Self::new(DataType::SIGNATURE)
        })
    }

    /// Checks the input and lays out its descriptor, all but offset and sizes.
    fn to_descriptor(&self, id: u32, time: i64) -> Result<Descriptor> {
        let mut name = [0; NAME_LEN];
        name.get_mut(..self.name.len())
            .ok_or_else(|| {
                invalid(format!(
                    "object name of {} bytes, at most {NAME_LEN} allowed",
                    self.name.len()
                ))
            })?
            .copy_from_slice(&self.name);
        let group_id = match self.group {
            None => GROUP_MASK,
            Some(group) if group != 0 && group & GROUP_MASK == 0 => group | GROUP_MASK,
            Some(group) => return Err(invalid(format!("group ID {group:#x}"))),
        };
        match self.link {
            Link::Object(target) | Link::Group(target)
                if target == 0 || target & GROUP_MASK != 0 =>
            {
                return Err(invalid(format!("link target {target:#x}")));
            }
            _ => {}
        }
        let fits = match &self.metadata {
            ObjectMetadata::None => self.data_type != DataType::PARTITION,
            ObjectMetadata::Partition { arch, .. } if !arch.is_known() => {
                return Err(invalid(format!("partition architecture code {:?}", arch.0)));
            }
            metadata => metadata.data_types().contains(&self.data_type),
        };
        if !fits {
            return Err(invalid(format!(
                "metadata {:?} for an object of type {}",
                self.metadata, self.data_type
            )));
        }
        let extra = self
            .metadata
            .encode()
            .ok_or_else(|| invalid("OCI digest longer than 384 bytes".into()))?;
        Ok(Descriptor {
            data_type: self.data_type,
            used: true,
            id,
            group_id,
            linked_id: self.link.to_raw(),
            offset: 0,
            size: 0,
            size_with_padding: 0,
            created_at: time,
            modified_at: time,
            uid: 0,
            gid: 0,
            name,
            extra,
        })
    }
}

/// Size of the buffer objects are copied through, bytes (1 MiB: few syscalls, little memory).
pub(super) const COPY_BUFFER_LEN: usize = 1 << 20;

/// Writes a SIF image to a `Write + Seek` target; see the module documentation.
#[derive(Debug)]
pub struct SifWriter<W: Write + Seek> {
    // Fixed when the image is created.
    inner: W,
    /// The header as it will be written, but for arch, free count and data size.
    header: GlobalHeader,
    capacity: u32,
    data_offset: u64,

    // Growing with each object.
    /// Descriptors of the finished objects; slot i holds ID i + 1.
    descriptors: Vec<Descriptor>,
    /// Architecture of the primary system partition, once there is one.
    arch: Arch,
    /// File offset just past the last object, bytes.
    end: u64,
    /// An [`ObjectWriter`] was handed out and not finished.
    is_object_open: bool,
}

impl<W: Write + Seek> SifWriter<W> {
    /// Starts an image in `inner` (which should be empty), writing zeros over the header and
    /// descriptor table it reserves.
    ///
    /// # Errors
    /// [`SifError::InvalidParameter`] for a launch script of 32 bytes or more, a capacity above
    /// [`MAX_DESCRIPTORS`] or a table offset below 128; [`SifError::Seek`],
    /// [`SifError::Write`] when `inner` fails.
    pub fn new(mut inner: W, options: CreateOptions) -> Result<Self> {
        let mut launch_script = [0; LAUNCH_SCRIPT_LEN];
        if options.launch_script.len() >= LAUNCH_SCRIPT_LEN {
            return Err(invalid(format!(
                "launch script of {} bytes, at most {} allowed",
                options.launch_script.len(),
                LAUNCH_SCRIPT_LEN - 1
            )));
        }
        launch_script[..options.launch_script.len()].copy_from_slice(&options.launch_script);
        if u64::from(options.descriptor_capacity) > MAX_DESCRIPTORS {
            return Err(invalid(format!(
                "descriptor capacity {}, at most {MAX_DESCRIPTORS} allowed",
                options.descriptor_capacity
            )));
        }
        if options.descriptors_offset < HEADER_LEN as u64 {
            return Err(invalid(format!(
                "descriptor table offset {}, at least {HEADER_LEN} required",
                options.descriptors_offset
            )));
        }
        let table_len = u64::from(options.descriptor_capacity) * DESCRIPTOR_LEN as u64;
        let data_offset = options
            .descriptors_offset
            .checked_add(table_len)
            .filter(|&end| i64::try_from(end).is_ok())
            .ok_or(SifError::TooLarge)?;
        let header = GlobalHeader {
            launch_script,
            magic: MAGIC,
            version: VERSION,
            arch: Arch::UNKNOWN,
            id: options.id,
            created_at: options.time,
            modified_at: options.time,
            descriptors_free: 0,
            descriptors_total: i64::from(options.descriptor_capacity),
            descriptors_offset: options.descriptors_offset as i64,
            descriptors_size: table_len as i64,
            data_offset: data_offset as i64,
            data_size: 0,
        };
        inner.seek(SeekFrom::Start(0)).map_err(SifError::Seek)?;
        write_zeros(&mut inner, data_offset).map_err(|source| SifError::Write {
            part: "header and descriptor table".into(),
            source,
        })?;
        Ok(Self {
            inner,
            header,
            capacity: options.descriptor_capacity,
            data_offset,
            descriptors: Vec::new(),
            arch: Arch::UNKNOWN,
            end: data_offset,
            is_object_open: false,
        })
    }

    /// Starts an image laid out as `singularity build` lays out its own (spec §2.1): the
    /// definition file, then one [`DataType::GENERIC_JSON`] object per non-empty entry of
    /// `json_objects`, sorted by name. Add the primary system partition next, with
    /// [`ObjectInput::primary_system_partition`], then [`SifWriter::finish`].
    ///
    /// # Errors
    /// As [`SifWriter::new`] and [`SifWriter::add_object`].
    pub fn singularity(
        inner: W,
        options: CreateOptions,
        deffile: &[u8],
        json_objects: &[(&str, &[u8])],
    ) -> Result<Self> {
        let mut writer = Self::new(inner, options)?;
        writer.add_object(ObjectInput::deffile(), deffile)?;
        let mut json: Vec<_> = json_objects
            .iter()
            .filter(|(_, data)| !data.is_empty())
            .collect();
        json.sort_by_key(|(name, _)| *name);
        for (name, data) in json {
            writer.add_object(ObjectInput::generic_json(name), *data)?;
        }
        Ok(writer)
    }

    /// Appends an object whose data is everything `data` yields, copied without holding it in
    /// memory; returns the object's ID.
    ///
    /// # Errors
    /// As [`SifWriter::begin_object`]; [`SifError::ReadSource`] if `data` fails,
    /// [`SifError::Write`] if the target does.
    pub fn add_object<R: Read>(&mut self, input: ObjectInput, mut data: R) -> Result<u32> {
        let mut object = self.begin_object(input)?;
        let part = format!("object {}", object.descriptor.id);
        copy_stream(&mut data, &mut object).map_err(|e| match e {
            CopyError::Read(source) => SifError::ReadSource { part, source },
            CopyError::Write(source) => SifError::Write { part, source },
        })?;
        object.finish()
    }

    /// Starts an object and returns a `Write + Seek` window over its data: position 0 is the
    /// object's first byte, its size is the furthest byte written. Call
    /// [`ObjectWriter::finish`] to record it; until then the writer refuses other calls.
    ///
    /// # Errors
    /// [`SifError::UnfinishedObject`] if a previous object writer was dropped unfinished;
    /// [`SifError::NoFreeDescriptor`]; [`SifError::SecondPrimaryPartition`];
    /// [`SifError::InvalidParameter`] for a bad name, group, link or metadata;
    /// [`SifError::TooLarge`]; [`SifError::Seek`], [`SifError::Write`] for the alignment gap.
    pub fn begin_object(&mut self, input: ObjectInput) -> Result<ObjectWriter<'_, W>> {
        if self.is_object_open {
            return Err(SifError::UnfinishedObject);
        }
        if self.descriptors.len() as u64 >= u64::from(self.capacity) {
            return Err(SifError::NoFreeDescriptor {
                capacity: self.capacity,
            });
        }
        if is_primary(&input.metadata) && self.descriptors.iter().any(|d| is_primary(&d.metadata()))
        {
            return Err(SifError::SecondPrimaryPartition);
        }
        // IDs follow slots (sylabs/sif `writeDataObject`); the capacity bound keeps this small.
        let id = self.descriptors.len() as u32 + 1;
        let descriptor = input.to_descriptor(id, self.header.created_at)?;
        let start = next_aligned(self.end, input.alignment).ok_or(SifError::TooLarge)?;
        self.inner
            .seek(SeekFrom::Start(self.end))
            .map_err(SifError::Seek)?;
        write_zeros(&mut self.inner, start - self.end).map_err(|source| SifError::Write {
            part: format!("alignment gap before object {id}"),
            source,
        })?;
        self.is_object_open = true;
        Ok(ObjectWriter {
            writer: self,
            descriptor,
            start,
            pos: 0,
            len: 0,
        })
    }

    /// Size the image has so far, bytes.
    pub fn image_len(&self) -> u64 {
        self.end
    }

    /// Writes the descriptors and the header and returns the target, positioned at the end of
    /// the image.
    ///
    /// # Errors
    /// [`SifError::UnfinishedObject`]; [`SifError::Seek`], [`SifError::Write`].
    pub fn finish(mut self) -> Result<W> {
        if self.is_object_open {
            return Err(SifError::UnfinishedObject);
        }
        let used = self.descriptors.len() as i64;
        self.header.arch = self.arch;
        self.header.descriptors_free = i64::from(self.capacity) - used;
        self.header.data_size = (self.end - self.data_offset) as i64;

        let table: Vec<u8> = self.descriptors.iter().flat_map(|d| d.encode()).collect();
        let write_at = |inner: &mut W, offset: u64, bytes: &[u8], part: &str| {
            inner
                .seek(SeekFrom::Start(offset))
                .map_err(SifError::Seek)?;
            inner.write_all(bytes).map_err(|source| SifError::Write {
                part: part.into(),
                source,
            })
        };
        let table_offset = self.header.descriptors_offset as u64;
        write_at(&mut self.inner, table_offset, &table, "descriptor table")?;
        write_at(&mut self.inner, 0, &self.header.encode(), "global header")?;
        self.inner
            .seek(SeekFrom::Start(self.end))
            .map_err(SifError::Seek)?;
        self.inner.flush().map_err(|source| SifError::Write {
            part: "image".into(),
            source,
        })?;
        Ok(self.inner)
    }
}

/// A `Write + Seek` window over the data of the object being added; see
/// [`SifWriter::begin_object`].
#[derive(Debug)]
pub struct ObjectWriter<'a, W: Write + Seek> {
    writer: &'a mut SifWriter<W>,
    /// The object's descriptor, offset and sizes still unset.
    descriptor: Descriptor,
    /// File offset of the object's first byte.
    start: u64,
    /// Cursor relative to `start`.
    pos: u64,
    /// Furthest byte written relative to `start`: the object's size.
    len: u64,
}

impl<W: Write + Seek> ObjectWriter<'_, W> {
    /// Records the object (its size is the furthest byte written) and returns its ID.
    ///
    /// # Errors
    /// [`SifError::TooLarge`] if the image no longer fits signed 64-bit offsets.
    pub fn finish(self) -> Result<u32> {
        let end = self
            .start
            .checked_add(self.len)
            .filter(|&end| i64::try_from(end).is_ok())
            .ok_or(SifError::TooLarge)?;
        let writer = self.writer;
        let mut descriptor = self.descriptor;
        descriptor.offset = self.start as i64;
        descriptor.size = self.len as i64;
        descriptor.size_with_padding = (end - writer.end) as i64;
        if let ObjectMetadata::Partition {
            part_type: PartType::PRIMARY_SYSTEM,
            arch,
            ..
        } = descriptor.metadata()
        {
            // The header's arch follows the primary partition (sylabs/sif `writeDataObject`).
            writer.arch = arch;
        }
        let id = descriptor.id;
        writer.descriptors.push(descriptor);
        writer.end = end;
        writer.is_object_open = false;
        Ok(id)
    }

    /// The ID the object will have.
    pub fn id(&self) -> u32 {
        self.descriptor.id
    }
}

impl<W: Write + Seek> Write for ObjectWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.writer.inner.write(buf)?;
        self.pos += n as u64;
        self.len = self.len.max(self.pos);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.inner.flush()
    }
}

impl<W: Write + Seek> Seek for ObjectWriter<'_, W> {
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        let pos = seek_window(
            &mut self.writer.inner,
            self.start,
            self.pos,
            self.len,
            target,
        )?;
        self.pos = pos;
        Ok(pos)
    }
}

/// Writes the image `singularity build` writes (spec §2.1): the definition file, the non-empty
/// JSON objects sorted by name, and `squashfs` as the primary system partition for `arch`,
/// copied from the reader without holding it in memory. Returns the target, positioned at the
/// end of the image.
///
/// # Errors
/// As [`SifWriter::singularity`], [`SifWriter::add_object`] and [`SifWriter::finish`].
pub fn write_singularity_image<W: Write + Seek, R: Read>(
    inner: W,
    options: CreateOptions,
    deffile: &[u8],
    json_objects: &[(&str, &[u8])],
    arch: Arch,
    squashfs: R,
) -> Result<W> {
    let mut writer = SifWriter::singularity(inner, options, deffile, json_objects)?;
    writer.add_object(ObjectInput::primary_system_partition(arch), squashfs)?;
    writer.finish()
}

/// Whether metadata marks a primary system partition.
fn is_primary(metadata: &ObjectMetadata) -> bool {
    matches!(
        metadata,
        ObjectMetadata::Partition {
            part_type: PartType::PRIMARY_SYSTEM,
            ..
        }
    )
}

/// The first offset at or after `offset` that is a multiple of `alignment` (0 and 1: any);
/// `None` on overflow.
fn next_aligned(offset: u64, alignment: u64) -> Option<u64> {
    match offset.checked_rem(alignment) {
        None | Some(0) => Some(offset),
        Some(rem) => offset.checked_add(alignment - rem),
    }
}

/// Writes `count` zero bytes.
fn write_zeros<W: Write>(out: &mut W, count: u64) -> io::Result<()> {
    io::copy(&mut io::repeat(0).take(count), out).map(|_| ())
}

fn invalid(reason: String) -> SifError {
    SifError::InvalidParameter { reason }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::sif::SifReader;

    fn options() -> CreateOptions {
        CreateOptions {
            id: *b"0123456789abcdef",
            time: 1_795_787_187,
            ..CreateOptions::default()
        }
    }

    #[test]
    fn aligns_like_sylabs_sif() {
        assert_eq!(next_aligned(33369, 4096), Some(36864));
        assert_eq!(next_aligned(36864, 4096), Some(36864));
        assert_eq!(next_aligned(33369, 0), Some(33369));
        assert_eq!(next_aligned(33369, 1), Some(33369));
        assert_eq!(next_aligned(u64::MAX - 1, 4096), None);
    }

    #[test]
    fn writes_the_singularity_layout() {
        let deffile = vec![b'd'; 192];
        let meta = vec![b'{'; 1001];
        let squashfs: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let image = write_singularity_image(
            Cursor::new(Vec::new()),
            options(),
            &deffile,
            &[("inspect-metadata.json", &meta), ("empty.json", b"")],
            Arch::AMD64,
            &squashfs[..],
        )
        .expect("write")
        .into_inner();
        // The offsets of spec §1.8 / §7.2 for the same object sizes.
        assert_eq!(image.len(), 40960);
        let mut reader = SifReader::new(Cursor::new(image)).expect("read back");
        let header = reader.header().clone();
        assert_eq!(header.launch_script(), SINGULARITY_LAUNCH_SCRIPT.as_bytes());
        assert_eq!(header.arch, Arch::AMD64);
        assert_eq!(header.descriptors_free, 45);
        assert_eq!(header.data_offset, 32176);
        assert_eq!(header.data_size, 8784);
        let layout: Vec<_> = reader
            .objects()
            .iter()
            .map(|d| {
                (
                    d.id,
                    d.data_type,
                    d.offset,
                    d.size,
                    d.size_with_padding,
                    d.group(),
                )
            })
            .collect();
        assert_eq!(
            layout,
            [
                (1, DataType::DEFFILE, 32176, 192, 192, Some(1)),
                (2, DataType::GENERIC_JSON, 32368, 1001, 1001, Some(1)),
                (3, DataType::PARTITION, 36864, 4096, 7591, Some(1)),
            ]
        );
        assert_eq!(reader.objects()[1].name(), b"inspect-metadata.json");
        assert_eq!(reader.primary_partition().map(|d| d.id), Some(3));
        assert_eq!(reader.read_object(3, 1 << 20).expect("partition"), squashfs);
        assert_eq!(reader.read_object(1, 1 << 20).expect("deffile"), deffile);
    }

    #[test]
    fn output_is_deterministic_and_independent_of_the_target_contents() {
        let write = |target: Vec<u8>| {
            write_singularity_image(
                Cursor::new(target),
                CreateOptions::default(),
                b"Bootstrap: scratch\n",
                &[],
                Arch::ARM64,
                &b"hsqs"[..],
            )
            .expect("write")
            .into_inner()
        };
        let clean = write(Vec::new());
        let mut dirty = write(vec![0xAA; clean.len()]);
        dirty.truncate(clean.len());
        assert_eq!(clean, dirty);
        let header = SifReader::new(Cursor::new(&clean))
            .expect("read")
            .header()
            .clone();
        assert_eq!(header.id, [0; 16]);
        assert_eq!(header.created_at, DETERMINISTIC_TIME);
    }

    #[test]
    fn object_writer_streams_and_seeks_within_the_object() {
        let mut writer = SifWriter::new(Cursor::new(Vec::new()), options()).expect("new");
        writer
            .add_object(ObjectInput::deffile(), &b"abc"[..])
            .expect("deffile");
        let mut object = writer
            .begin_object(ObjectInput::primary_system_partition(Arch::AMD64))
            .expect("begin");
        object.write_all(&[0; 4]).expect("placeholder");
        object.write_all(b"payload").expect("payload");
        // A SquashFS writer patches its superblock last.
        object.seek(SeekFrom::Start(0)).expect("seek");
        object.write_all(b"hsqs").expect("superblock");
        assert_eq!(object.seek(SeekFrom::End(0)).expect("end"), 11);
        assert!(object.seek(SeekFrom::Current(-12)).is_err());
        assert_eq!(object.finish().expect("finish"), 2);
        let image = writer.finish().expect("finish").into_inner();
        let mut reader = SifReader::new(Cursor::new(image)).expect("read");
        assert_eq!(reader.object(2).expect("object").offset, 32768);
        assert_eq!(reader.read_object(2, 64).expect("data"), b"hsqspayload");
    }

    #[test]
    fn an_abandoned_object_writer_blocks_the_image() {
        let mut writer = SifWriter::new(Cursor::new(Vec::new()), options()).expect("new");
        {
            let _abandoned = writer.begin_object(ObjectInput::deffile()).expect("begin");
        }
        assert!(matches!(
            writer.add_object(ObjectInput::deffile(), &b""[..]),
            Err(SifError::UnfinishedObject)
        ));
        assert!(matches!(writer.finish(), Err(SifError::UnfinishedObject)));
    }

    #[test]
    fn refuses_bad_parameters_instead_of_panicking() {
        let new = |options| SifWriter::new(Cursor::new(Vec::new()), options);
        let too_long = CreateOptions {
            launch_script: vec![b'#'; LAUNCH_SCRIPT_LEN],
            ..options()
        };
        assert!(matches!(
            new(too_long),
            Err(SifError::InvalidParameter { .. })
        ));
        let low_table = CreateOptions {
            descriptors_offset: 64,
            ..options()
        };
        assert!(matches!(
            new(low_table),
            Err(SifError::InvalidParameter { .. })
        ));
        let huge = CreateOptions {
            descriptor_capacity: u32::MAX,
            ..options()
        };
        assert!(matches!(new(huge), Err(SifError::InvalidParameter { .. })));

        let mut writer = new(CreateOptions {
            descriptor_capacity: 2,
            ..options()
        })
        .expect("new");
        let bad_inputs = [
            ObjectInput {
                name: vec![b'n'; NAME_LEN + 1],
                ..ObjectInput::deffile()
            },
            ObjectInput {
                group: Some(0),
                ..ObjectInput::deffile()
            },
            ObjectInput {
                group: Some(GROUP_MASK | 1),
                ..ObjectInput::deffile()
            },
            ObjectInput {
                link: Link::Object(0),
                ..ObjectInput::deffile()
            },
            ObjectInput::new(DataType::PARTITION),
            ObjectInput::primary_system_partition(Arch::UNKNOWN),
            ObjectInput {
                data_type: DataType::DEFFILE,
                ..ObjectInput::primary_system_partition(Arch::AMD64)
            },
        ];
        for input in bad_inputs {
            let result = writer.add_object(input.clone(), &b"x"[..]);
            assert!(
                matches!(result, Err(SifError::InvalidParameter { .. })),
                "{input:?} gave {result:?}"
            );
        }
        assert!(ObjectInput::group_signature(1, HashType::SHA256, &[1; ENTITY_LEN + 1]).is_err());

        let primary = ObjectInput::primary_system_partition(Arch::AMD64);
        writer
            .add_object(primary.clone(), &b"1"[..])
            .expect("first");
        assert!(matches!(
            writer.add_object(primary, &b"2"[..]),
            Err(SifError::SecondPrimaryPartition)
        ));
        writer
            .add_object(ObjectInput::deffile(), &b"2"[..])
            .expect("second slot");
        assert!(matches!(
            writer.add_object(ObjectInput::deffile(), &b"3"[..]),
            Err(SifError::NoFreeDescriptor { capacity: 2 })
        ));
    }

    #[test]
    fn signatures_link_to_their_group() {
        let mut writer = SifWriter::new(Cursor::new(Vec::new()), options()).expect("new");
        writer
            .add_object(ObjectInput::deffile(), &b"def"[..])
            .expect("deffile");
        let fingerprint = [0xA2; 20];
        let signature = ObjectInput::group_signature(1, HashType::SHA256, &fingerprint)
            .expect("signature input");
        writer
            .add_object(signature, &b"-----BEGIN PGP SIGNED MESSAGE-----"[..])
            .expect("signature");
        let image = writer.finish().expect("finish").into_inner();
        let reader = SifReader::new(Cursor::new(image)).expect("read");
        let d = reader.object(2).expect("signature");
        assert_eq!(d.group(), None);
        assert_eq!(d.group_id, GROUP_MASK);
        assert_eq!(d.link(), Link::Group(1));
        assert_eq!(d.linked_id, 0xF000_0001);
        assert_eq!(d.metadata().fingerprint(), Some(&fingerprint[..]));
    }
}
