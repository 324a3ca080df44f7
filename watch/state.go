package watch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/internal/fsync"
	"github.com/refcast/refcast/wire"
)

// stateV1 is the state file's content. Refs is optional (omitted by
// watch, absent from files written before relays kept it), so the version
// stays 1: every version of refcast reads every file.
type stateV1 struct {
	V      int                          `json:"v"`
	Cursor string                       `json:"cursor"`
	Refs   map[string]map[string]string `json:"refs,omitempty"`
	Saved  time.Time                    `json:"saved"`
}

// State is what a state file holds.
type State struct {
	// Cursor is the position to resume from.
	Cursor string
	// Refs is, for a relay, the object id last delivered per repo and ref
	// as of Cursor (repo → ref → id); nil in a watch's file or an older
	// relay's. Written in the same file as Cursor, so the two are saved
	// together or not at all.
	Refs map[string]map[string]string
}

// LoadState reads the cursor stored at path. A missing file is no cursor
// and no error; a file that does not hold a valid cursor is an error, so a
// corrupt file is not silently treated as "start from now".
func LoadState(path string) (string, error) {
	st, err := ReadState(path)
	return st.Cursor, err
}

// ReadState reads the state stored at path, as LoadState does, with its
// refs, each checked (a valid repo, ref and non-zero object id).
func ReadState(path string) (State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("read state: %w", err)
	}
	var st stateV1
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, corruptState(path, err)
	}
	if st.V != 1 {
		return State{}, corruptState(path, fmt.Errorf("unknown version %d (written by a newer refcast?)", st.V))
	}
	if err := wire.ValidateCursor(st.Cursor); err != nil {
		return State{}, corruptState(path, err)
	}
	if err := validateRefs(st.Refs); err != nil {
		return State{}, corruptState(path, err)
	}
	return State{Cursor: st.Cursor, Refs: st.Refs}, nil
}

func validateRefs(refs map[string]map[string]string) error {
	for repo, ids := range refs {
		if err := bus.ValidateRepo(repo); err != nil {
			return err
		}
		for ref, id := range ids {
			if err := bus.ValidateRef(ref); err != nil {
				return err
			}
			if err := bus.ValidateObjectID(id); err != nil {
				return fmt.Errorf("ref %s of %s: %w", ref, repo, err)
			}
			if bus.IsZeroID(id) {
				return fmt.Errorf("ref %s of %s: the zero id (a deleted ref is not kept)", ref, repo)
			}
		}
	}
	return nil
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
	return WriteState(path, State{Cursor: cursor})
}

// WriteState stores st at path atomically, as SaveState does: the cursor
// and the refs are replaced together or not at all.
func WriteState(path string, st State) error {
	if err := wire.ValidateCursor(st.Cursor); err != nil {
		return err
	}
	if err := validateRefs(st.Refs); err != nil {
		return fmt.Errorf("save state %s: %w", path, err)
	}
	b, err := json.Marshal(stateV1{V: 1, Cursor: st.Cursor, Refs: st.Refs, Saved: time.Now().UTC()})
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
	_ = fsync.Dir(dir) // best effort: some filesystems refuse a directory fsync
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
	st, err := OpenState(path)
	return st.Cursor, err
}

// OpenState is CheckState returning the whole state, refs included (a
// relay's).
func OpenState(path string) (State, error) {
	st, err := ReadState(path)
	if err != nil {
		return State{}, fmt.Errorf("%w: fix or remove the file (removing it starts from now)", err)
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return State{}, fmt.Errorf("state file %s is not a regular file: give --state a file path", path)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return State{}, fmt.Errorf("state file %s cannot be saved: %w: create the directory %s and let this user write to it, or give --state another path", path, err, dir)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return State{}, fmt.Errorf("state file %s: remove test file: %w", path, err)
	}
	return st, nil
}
