# kiln — run `make help` for the list.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: help setup setup-test build typecheck lint-layers lint-shell lint-format format fixtures fixtures-install image test test-unit test-e2e test-install bench clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

setup: ## install what building needs: apt packages and npm dependencies (idempotent, root)
	@bash scripts/setup.sh

setup-test: setup ## also install what only the tests and benchmarks use: test servers, shellcheck (idempotent, root)
	@bash scripts/setup-test-servers.sh

build: setup ## compile TypeScript to dist/
	@tsc -p tsconfig.json

typecheck: setup ## type-check the tests too (vitest strips types without checking them)
	@tsc -p tsconfig.test.json

lint-layers: setup ## check that imports only point down the layers (.dependency-cruiser.cjs; docs/architecture.md)
	@depcruise src --config .dependency-cruiser.cjs

lint-shell: setup-test ## shellcheck the shell scripts kiln runs in guests (src/guest-scripts/) and the setup scripts
	@shellcheck src/guest-scripts/*.sh scripts/setup*.sh .ci/run

lint-format: setup ## check the TypeScript and benchmark sources are Prettier-formatted (.prettierrc.json; fix with make format)
	@prettier --check --log-level warn .

format: setup ## format the TypeScript and benchmark sources with Prettier
	@prettier --write --log-level warn .

fixtures: setup ## build the offline test guests and installer ISO (cached in fixtures/images/)
	@bash scripts/fixtures/tiny.sh
	@bash scripts/fixtures/tiny-arm64.sh
	@bash scripts/fixtures/debian-12-cloud.sh
	@bash scripts/fixtures/installer-iso.sh
	@bash scripts/fixtures/debian-netboot-iso.sh

fixtures-install: fixtures ## also build the Debian debootstrap installer ISO (for make test-install)
	@bash scripts/fixtures/debian-installer-iso.sh

image: build fixtures ## build the default example image (examples/debian-12-cloud.yaml)
	@bash scripts/make-image.sh

test: build typecheck lint-layers lint-shell lint-format fixtures setup-test ## run every test: unit, then end-to-end (boots real guests under QEMU)
	@vitest run test/unit
	@vitest run test/e2e

test-unit: build typecheck lint-layers lint-format ## run only the fast unit tests
	@vitest run test/unit

test-e2e: build fixtures setup-test ## run only the end-to-end tests
	@vitest run test/e2e

test-install: build fixtures-install ## the long ISO install test: Debian 12 via debootstrap (12-16 min under TCG)
	@vitest run --config vitest.install.config.ts

bench: build fixtures setup-test ## run the benchmarks and print their figures
	@node bench/run.mjs

clean: ## remove build output (keeps cached fixture images)
	rm -rf dist output output-*

distclean: clean ## also remove cached fixture images and node_modules
	rm -rf fixtures/images node_modules
