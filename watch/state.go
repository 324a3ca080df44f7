package watch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/refcast/refcast/wire"
)

// stateV1 is the state file's content.
type stateV1 struct {
	V      int       `json:"v"`
	Cursor string    `json:"cursor"`
	Saved  time.Time `json:"saved"`
}

// LoadState reads the cursor stored at path. A missing file is no cursor
// and no error; a file that does not hold a valid cursor is an error, so a
// corrupt file is not silently treated as "start from now".
func LoadState(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read state: %w", err)
	}
	var st stateV1
	if err := json.Unmarshal(b, &st); err != nil {
		return "", corruptState(path, err)
	}
	if st.V != 1 {
		return "", corruptState(path, fmt.Errorf("unknown version %d (written by a newer refcast?)", st.V))
	}
	if err := wire.ValidateCursor(st.Cursor); err != nil {
		return "", corruptState(path, err)
	}
	return st.Cursor, nil
}

// corruptState says what to do about a state file that holds no cursor:
// the watcher does not guess one, since starting from now would silently
// skip what happened while it was down.
func corruptState(path string, err error) error {
	return fmt.Errorf("state file %s is corrupt (%w): delete it to start from now (changes since the last run are not replayed), or restore it", path, err)
}

// SaveState stores cursor at path atomically: it writes a temporary file in
// the same directory, fsyncs it, renames it over path and fsyncs the
// directory, so a crash leaves either the old or the new cursor.
func SaveState(path, cursor string) error {
	if err := wire.ValidateCursor(cursor); err != nil {
		return err
	}
	b, err := json.Marshal(stateV1{V: 1, Cursor: cursor, Saved: time.Now().UTC()})
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("save state %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save state %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: some filesystems refuse a directory fsync
		d.Close()
	}
	return nil
}

// CheckState is what a watcher runs before following: it loads the cursor
// stored at path (see LoadState) and proves that SaveState will be able
// to write there, by creating and removing a temporary file in the same
// directory the way SaveState does. A watcher that cannot keep its
// position must say so at start, not log an error per event and have a
// restart silently begin from now. The error names the file and what to
// do.
func CheckState(path string) (string, error) {
	cursor, err := LoadState(path)
	if err != nil {
		return "", fmt.Errorf("%w: fix or remove the file (removing it starts from now)", err)
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return "", fmt.Errorf("state file %s is not a regular file: give --state a file path", path)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return "", fmt.Errorf("state file %s cannot be saved: %w: create the directory %s and let this user write to it, or give --state another path", path, err, dir)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return "", fmt.Errorf("state file %s: remove test file: %w", path, err)
	}
	return cursor, nil
}
