//go:build !unix

package hook

import "io/fs"

// queueDirPermError: no Unix modes here; the directory's ACL is the
// operator's to set.
func queueDirPermError(string, fs.FileInfo) error { return nil }

// ownerOf: owners are not checked here.
func ownerOf(fs.FileInfo) int { return -1 }

// processAlive: not asked here; an unfinished file is abandoned by age
// alone (DrainOptions.AbandonAfter).
func processAlive(int) bool { return false }
