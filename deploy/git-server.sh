#!/bin/sh
# git-server: the compose demo's git host. Creates bare repositories under
# /srv/git (GIT_REPOS, space-separated, default "demo"), installs the refcast
# hook into each so pushes are published straight to Redis (REFCAST_REDIS)
# under the repo name NAME, then serves them with git daemon, pushes allowed.
#
# Anonymous push over git:// is for the demo only: a real git host
# (Gitea, GitLab, gitolite, sshd + git-shell) runs `refcast install-hook`
# the same way and keeps its own authentication.
set -eu

root=${GIT_ROOT:-/srv/git}
: "${REFCAST_REDIS:?set REFCAST_REDIS, e.g. redis://redis:6379}"

for name in ${GIT_REPOS:-demo}; do
	repo="$root/$name.git"
	if [ ! -d "$repo" ]; then
		mkdir -p "$(dirname "$repo")"
		git init --quiet --bare --initial-branch=main "$repo"
		echo "git-server: created $repo"
	fi
	# Idempotent: re-installing refreshes the hook after an image upgrade.
	refcast install-hook "$repo" --redis "$REFCAST_REDIS" --repo "$name"
done

exec git daemon \
	--verbose \
	--reuseaddr \
	--informative-errors \
	--listen=0.0.0.0 \
	--port=9418 \
	--export-all \
	--enable=receive-pack \
	--base-path="$root" \
	"$root"
