package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"runtime/debug"
)

// bbolt maps the file into memory and trusts its metadata: a truncated file
// (a partial copy, a full disk) makes it read past the end of the file, and
// that is a SIGBUS that no recover catches. checkSize reads the meta pages
// the way bbolt does and refuses a file shorter than they say it is.

const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2
	pageHeader  = 16 // id u64, flags u16, count u16, overflow u32
	metaSumOff  = 56 // the checksum covers the meta up to here
)

// checkSize reports ErrCorrupt if the file is shorter than a valid meta
// page of it says. A missing or empty file is fine (bbolt creates it).
func checkSize(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open bus %s: %w", path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open bus %s: %w", path, err)
	}
	size := info.Size()
	// bbolt finds meta page 1 by trying page sizes from 1 KiB up.
	offsets := []int64{0}
	for i := range 15 {
		offsets = append(offsets, 1024<<i)
	}
	var buf [pageHeader + 64]byte
	for _, off := range offsets {
		if off+int64(len(buf)) > size {
			break
		}
		if _, err := f.ReadAt(buf[:], off); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("open bus %s: %w", path, err)
		}
		m := buf[pageHeader:]
		le := binary.NativeEndian // bbolt writes its metadata in the machine's order
		if le.Uint32(m) != boltMagic || le.Uint32(m[4:]) != boltVersion {
			continue
		}
		h := fnv.New64a()
		h.Write(m[:metaSumOff])
		if h.Sum64() != le.Uint64(m[metaSumOff:]) {
			continue
		}
		pageSize, pgid := int64(le.Uint32(m[8:])), le.Uint64(m[40:])
		if pageSize <= 0 || pgid > uint64(1<<62)/uint64(pageSize) {
			return fmt.Errorf("open bus %s: %w: meta page at %d is inconsistent (move it aside to start with an empty history)", path, ErrCorrupt, off)
		}
		if need := int64(pgid) * pageSize; size < need {
			return fmt.Errorf("open bus %s: %w: the file is %d bytes but its metadata says %d; it was truncated (move it aside to start with an empty history)", path, ErrCorrupt, size, need)
		}
	}
	return nil
}

// guard runs fn with memory faults turned into panics and panics into
// ErrCorrupt, so damage bbolt does not detect stops Open, not the process.
func guard(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("open bus %s: %w: %v (move it aside to start with an empty history)", path, ErrCorrupt, r)
		}
	}()
	return fn()
}
