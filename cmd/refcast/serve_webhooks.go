//go:build !windows

package main

import (
	"fmt"
	"os"

	"github.com/refcast/refcast/bus"
	"github.com/refcast/refcast/forge"
)

// webhookReceiver builds the forge webhook receiver from --webhook-*
// flags, or nil when no secret file is given (the endpoints answer 404). A
// malformed file, a secret shorter than forge.MinSecretLen or a prefix
// that cannot start a repo name stops the node at start, with the line.
func (c *serveConfig) webhookReceiver() (*forge.Receiver, error) {
	if c.webhookSecretFile == "" {
		if c.webhookLowercase || c.webhookRepoPrefix != "" {
			return nil, usageError{msg: "serve: --webhook-lowercase and --webhook-repo-prefix need --webhook-secret-file"}
		}
		return nil, nil
	}
	f, err := os.Open(c.webhookSecretFile)
	if err != nil {
		return nil, fmt.Errorf("--webhook-secret-file: %w", err)
	}
	defer f.Close()
	secrets, err := forge.ParseSecrets(f)
	if err != nil {
		return nil, fmt.Errorf("--webhook-secret-file %s: %w", c.webhookSecretFile, err)
	}
	if p := c.webhookRepoPrefix; p != "" {
		// The prefix must make a valid name with any valid forge name
		// after it: it ends in '/' or continues the first segment.
		if err := bus.ValidateRepo(p + "x"); err != nil {
			return nil, usageError{msg: fmt.Sprintf("serve: --webhook-repo-prefix %q: %v (e.g. github.com/)", bus.Clip(p, 80), err)}
		}
	}
	return &forge.Receiver{Secrets: secrets, Lowercase: c.webhookLowercase, RepoPrefix: c.webhookRepoPrefix}, nil
}
