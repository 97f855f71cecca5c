# The README's two commands: `make app` and `make test`. Both set up .venv first (once; again
# when requirements.txt changes). pip, not uv/poetry: torch comes from this machine kind's
# local wheel disk, which only pip reads.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: app test bench system-packages

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

app: $(VENV)/.installed
	$(PY) -m streamlit run app.py

# What the tests need from Debian, installed when missing so `make test` passes alone on a fresh
# machine: Chromium and its driver (tests/test_browser.py) and PostgreSQL's server (the store's
# tests also run on a throwaway cluster: fusion/store/throwaway_postgres.py).
system-packages:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	    sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$sudo apt-get update -qq && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(VENV)/.installed system-packages
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(VENV)/.installed
	$(PY) -m fusion bench predict --json
