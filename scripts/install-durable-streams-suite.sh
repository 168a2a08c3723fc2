#!/usr/bin/env bash
# Installs what tests/durable_streams.rs runs against Rill: the Durable
# Streams conformance suite and the official TypeScript client, pinned by
# conformance/durable-streams/package-lock.json (npm's cache under
# ~/.cache). Prints the directory the tests run in.
#
# Node comes from Debian's packages. The suite runs on vitest 4, which
# needs Node 20.19 or later; Debian 12's nodejs is 18, so where the
# packaged one is older, the official Node binary (pinned, checked against
# its sha512) is fetched from the npm registry into ~/.cache and linked as
# node_modules/.bin/node, which the tests put first on their PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/conformance/durable-streams"
NODE_VERSION=22.12.0
NODE_SHA512=4khrFzyJU/IdeFo3m5vByubF9TkuPHJzJbKyOWtJp6tXofuNEV+t+d4w6+i9tSYJIjlaZIv8Xbm8hlL5UXIBaQ==

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq nodejs >&2
  # Debian's nodejs comes without npm; NodeSource's has it.
  command -v npm >/dev/null || $SUDO apt-get install -y -qq npm >&2
fi

# Node 20.19 or later?
recent() { "$1" -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a == 20 && b >= 19) ? 0 : 1)'; }
NODE="$(command -v node)"
if ! recent "$NODE"; then
  case "$(uname -m)" in
    x86_64) ARCH=x64 ;;
    aarch64) ARCH=arm64 ;;
    *) echo "no Node $NODE_VERSION for $(uname -m); install Node 20.19 or later" >&2; exit 1 ;;
  esac
  ROOT="$HOME/.cache/rill/tools/node-$NODE_VERSION"
  if [ ! -x "$ROOT/package/bin/node" ]; then
    echo "Node $($NODE --version) is older than the suite needs: fetching Node $NODE_VERSION into $ROOT" >&2
    mkdir -p "$ROOT"
    curl -sfL "https://registry.npmjs.org/node-linux-$ARCH/-/node-linux-$ARCH-$NODE_VERSION.tgz" -o "$ROOT/node.tgz"
    if [ "$ARCH" = x64 ] && [ "$(openssl dgst -sha512 -binary "$ROOT/node.tgz" | base64 -w0)" != "$NODE_SHA512" ]; then
      echo "the Node download does not match its checksum" >&2
      rm -f "$ROOT/node.tgz"
      exit 1
    fi
    tar xzf "$ROOT/node.tgz" -C "$ROOT"
    rm -f "$ROOT/node.tgz"
  fi
  NODE="$ROOT/package/bin/node"
fi

# Reinstalled only when the lock file changed since the last install.
STAMP="$DIR/node_modules/.rill-lock"
if ! cmp -s "$DIR/package-lock.json" "$STAMP" 2>/dev/null; then
  echo "installing the Durable Streams conformance suite into $DIR/node_modules" >&2
  npm_config_cache="$HOME/.cache/rill/npm" npm ci --prefix "$DIR" --no-audit --no-fund >&2
  cp "$DIR/package-lock.json" "$STAMP"
fi
if [ "$NODE" != "$(command -v node)" ]; then
  ln -sf "$NODE" "$DIR/node_modules/.bin/node"
fi
echo "$DIR"
