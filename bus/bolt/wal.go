package bolt

// The write-ahead log. A publish is made durable by one record appended to
// a preallocated file and one fdatasync; the bbolt file takes the logged
// pushes later, many in one transaction (a flush). A bbolt commit fsyncs
// twice (its pages, then its meta page) and rewrites every page on the path
// to each key it touches: ~40 % of a node's CPU per event in the spread
// scenario went to that commit. With the log, BenchmarkPublish/fsync takes
// 142 µs of CPU and 0.17 ms (p50) per publish, where a bbolt commit each
// took 364 µs and 0.53 ms (docs/performance.md, "The embedded bus's log").
//
// Records of one generation follow each other from the file's start:
//
//	u32 magic, u64 generation, u32 payload length,
//	u32 CRC-32C of generation, length and payload, payload
//
// and the payload is a u32 count of entries, each
//
//	u32 partition, u64 first seq, u64 chain after its last event,
//	u32 events, per event u32 length and its stored form (encodeEvent),
//	u32 length and the JSON of what the ref state needs of the push
//	(statePush)
//
// A flush writes the pending entries to bbolt together with the
// generation (meta/walgen), then the log starts the next generation at
// offset 0. Open replays the records of the generation after meta/walgen
// that read back whole (magic, generation and checksum agree), stopping at
// the first that does not: a torn or never-synced record was never
// acknowledged, and a stale record is of an older generation. A record
// that reads back whole must continue the file (position and chain), or
// Open fails naming the log.
//
// The file is written with zeros to its full size when created, so an
// append changes no metadata and fdatasync flushes the data only.

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/internal/fsync"
)

const (
	// WALFileName is the log inside the data directory.
	WALFileName = "bus.wal"
	// walSize is the log's size. A flush starts it over once it holds
	// flushBytes, so what is used is that and one batch; a batch larger
	// than the whole log (a push of thousands of refs, a seed) is
	// committed to bbolt directly, as every publish was before the log.
	// It is written with zeros once, when the data directory is made: at
	// 8 MiB that was 8 MiB written and synced by every test that opens a
	// bus.
	walSize   = 1 << 20
	walMagic  = 0x52435731 // "RCW1"
	walHeader = 20
	// flushPushes is how many logged pushes wait for a flush at most: 256
	// amortise a flush's two fsyncs and its page writes over 256 publishes
	// (a few µs each), and bound what readers merge from memory.
	flushPushes = 256
	// flushBytes also flushes once the log holds 256 KiB (or half of it,
	// if smaller), which bounds the tail's heap to about twice that (the
	// events' stored forms and structs): a push whose events carry commit
	// subjects takes a few KB, and the embedded bus's history is otherwise
	// out of the heap (TestStalledReadersMemoryBound). Typical pushes
	// (~600 bytes) reach flushPushes first.
	flushBytes = 256 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// entry is one logged push: its events' stored forms and, in memory, the
// events themselves.
type entry struct {
	p     *bus.Push
	pi    int
	first uint64
	chain uint64 // the partition's chain after the push's last event
	order uint64 // its place in the push id window; 0 when read back from the log
	vals  [][]byte
	evs   []bus.Event // nil for entries read back from the log
}

func (e *entry) last() uint64 { return e.first + uint64(len(e.vals)) - 1 }

// wal is the log file. Owned by the goroutine holding Bus.wmu.
type wal struct {
	f      *os.File
	size   int64  // walSize, smaller in tests
	gen    uint64 // generation of the records being written
	off    int64  // where the next record goes
	noSync bool
	// failSync, for tests, is what the next syncs return (a write that
	// reached the page cache and failed to reach the disk).
	failSync error
	// failing: the last append failed (its publish was committed to bbolt
	// directly); the next that works is logged as a recovery.
	failing bool
}

// openWAL opens (creating and preallocating if needed) the log in dir.
func openWAL(dir string, size int64, noSync bool) (*wal, error) {
	path := filepath.Join(dir, WALFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open bus log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("open bus log: %w", err)
	}
	if have := fi.Size(); have < size {
		// A new file (or a short one): zeros to the full size, synced, and
		// the directory entry synced, before any record relies on it.
		zeros := make([]byte, 64<<10)
		for off := have; off < size; off += int64(len(zeros)) {
			if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off); err != nil {
				_ = f.Close()
				return nil, fmt.Errorf("preallocate bus log %s: %w", path, err)
			}
		}
		if err := syncFile(f, noSync); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("sync bus log %s: %w", path, err)
		}
		if err := syncDir(dir, noSync); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	return &wal{f: f, size: size, noSync: noSync}, nil
}

// append writes one record and syncs it.
func (w *wal) append(rec []byte) error {
	if _, err := w.f.WriteAt(rec, w.off); err != nil {
		return err
	}
	if w.failSync != nil {
		return w.failSync
	}
	if err := syncData(w.f, w.noSync); err != nil {
		return err
	}
	w.off += int64(len(rec))
	return nil
}

// next starts the next generation, after a flush.
func (w *wal) next() { w.gen, w.off = w.gen+1, 0 }

func syncFile(f *os.File, noSync bool) error {
	if noSync {
		return nil
	}
	return f.Sync()
}

func syncDir(dir string, noSync bool) error {
	if noSync || runtime.GOOS == "windows" { // a directory cannot be synced there
		return nil
	}
	if err := fsync.Dir(dir); err != nil {
		return fmt.Errorf("sync bus data directory: %w", err)
	}
	return nil
}

// encodeRecord is a record holding entries, to be sealed with its
// generation.
func encodeRecord(entries []*entry) ([]byte, error) {
	pushes := make([][]byte, len(entries))
	n := walHeader + 4
	for i, e := range entries {
		j, err := json.Marshal(e.p)
		if err != nil {
			return nil, fmt.Errorf("log push %s: %w", e.p.ID, err)
		}
		pushes[i] = j
		n += 4 + 8 + 8 + 4 + 4 + len(j)
		for _, v := range e.vals {
			n += 4 + len(v)
		}
	}
	rec := make([]byte, walHeader, n) // one allocation: a batch can be MBs
	rec = binary.BigEndian.AppendUint32(rec, uint32(len(entries)))
	for i, e := range entries {
		rec = binary.BigEndian.AppendUint32(rec, uint32(e.pi))
		rec = binary.BigEndian.AppendUint64(rec, e.first)
		rec = binary.BigEndian.AppendUint64(rec, e.chain)
		rec = binary.BigEndian.AppendUint32(rec, uint32(len(e.vals)))
		for _, v := range e.vals {
			rec = binary.BigEndian.AppendUint32(rec, uint32(len(v)))
			rec = append(rec, v...)
		}
		rec = binary.BigEndian.AppendUint32(rec, uint32(len(pushes[i])))
		rec = append(rec, pushes[i]...)
	}
	return rec, nil
}

// sealRecord fills in rec's header for generation gen.
func sealRecord(rec []byte, gen uint64) []byte {
	binary.BigEndian.PutUint32(rec, walMagic)
	binary.BigEndian.PutUint64(rec[4:], gen)
	binary.BigEndian.PutUint32(rec[12:], uint32(len(rec)-walHeader))
	binary.BigEndian.PutUint32(rec[16:], recordCRC(rec))
	return rec
}

// recordCRC covers a record's generation, length and payload.
func recordCRC(rec []byte) uint32 {
	c := crc32.Update(0, castagnoli, rec[4:16])
	return crc32.Update(c, castagnoli, rec[walHeader:])
}

// readRecords returns the entries of the generation-gen records at the
// start of the log r of size bytes, up to the first record that is not one
// whole. It reads only those records (and the header after them).
func readRecords(r io.ReaderAt, size int64, gen uint64) ([]*entry, error) {
	var out []*entry
	hdr := make([]byte, walHeader)
	for off := int64(0); off+walHeader <= size; {
		if _, err := r.ReadAt(hdr, off); err != nil {
			return nil, logError{err}
		}
		n := int64(binary.BigEndian.Uint32(hdr[12:]))
		if binary.BigEndian.Uint32(hdr) != walMagic || binary.BigEndian.Uint64(hdr[4:]) != gen || n > size-off-walHeader {
			break
		}
		rec := make([]byte, walHeader+n)
		if _, err := r.ReadAt(rec, off); err != nil {
			return nil, logError{err}
		}
		if binary.BigEndian.Uint32(rec[16:]) != recordCRC(rec) {
			break
		}
		entries, err := decodePayload(rec[walHeader:])
		if err != nil {
			// The checksum matched: written so by a refcast, not torn.
			return nil, logError{fmt.Errorf("record of generation %d at %d: %w", gen, off, err)}
		}
		out = append(out, entries...)
		off += walHeader + n
	}
	return out, nil
}

// laterGeneration is the generation of the log's first record if it reads
// back whole and is later than next (the one a replay takes), else 0.
func laterGeneration(r io.ReaderAt, size int64, next uint64) uint64 {
	hdr := make([]byte, walHeader)
	if _, err := r.ReadAt(hdr, 0); err != nil || binary.BigEndian.Uint32(hdr) != walMagic {
		return 0
	}
	gen, n := binary.BigEndian.Uint64(hdr[4:]), int64(binary.BigEndian.Uint32(hdr[12:]))
	if gen <= next || n > size-walHeader {
		return 0
	}
	if entries, err := readRecords(r, size, gen); err != nil || len(entries) == 0 {
		return 0
	}
	return gen
}

// logError is a log that cannot be replayed into the file: Open says so,
// rather than blaming the file.
type logError struct{ err error }

func (e logError) Error() string { return e.err.Error() }
func (e logError) Unwrap() error { return e.err }

// payload reads a record's payload.
type payload struct{ b []byte }

func (p *payload) u32() (uint32, error) {
	if len(p.b) < 4 {
		return 0, io.ErrUnexpectedEOF
	}
	v := binary.BigEndian.Uint32(p.b)
	p.b = p.b[4:]
	return v, nil
}

func (p *payload) u64() (uint64, error) {
	if len(p.b) < 8 {
		return 0, io.ErrUnexpectedEOF
	}
	v := binary.BigEndian.Uint64(p.b)
	p.b = p.b[8:]
	return v, nil
}

func (p *payload) bytes() ([]byte, error) {
	n, err := p.u32()
	if err != nil {
		return nil, err
	}
	if uint64(n) > uint64(len(p.b)) {
		return nil, io.ErrUnexpectedEOF
	}
	v := p.b[:n:n]
	p.b = p.b[n:]
	return v, nil
}

func decodePayload(b []byte) ([]*entry, error) {
	p := &payload{b: b}
	n, err := p.u32()
	if err != nil {
		return nil, err
	}
	var out []*entry
	for range n {
		e := &entry{}
		pi, err := p.u32()
		if err != nil {
			return nil, err
		}
		e.pi = int(pi)
		if e.first, err = p.u64(); err != nil {
			return nil, err
		}
		if e.chain, err = p.u64(); err != nil {
			return nil, err
		}
		nv, err := p.u32()
		if err != nil {
			return nil, err
		}
		if nv == 0 || uint64(nv) > uint64(len(p.b)/4) {
			return nil, fmt.Errorf("entry with %d events", nv)
		}
		e.vals = make([][]byte, nv)
		for i := range e.vals {
			if e.vals[i], err = p.bytes(); err != nil {
				return nil, err
			}
		}
		j, err := p.bytes()
		if err != nil {
			return nil, err
		}
		e.p = new(bus.Push)
		if err := json.Unmarshal(j, e.p); err != nil {
			return nil, fmt.Errorf("logged push: %w", err)
		}
		out = append(out, e)
	}
	if len(p.b) != 0 {
		return nil, fmt.Errorf("%d bytes after the last entry", len(p.b))
	}
	return out, nil
}

// publishedOf is when an entry was published (its first event's stored
// time).
func publishedOf(e *entry) time.Time {
	t, _ := publishedAt(e.vals[0])
	return t
}
