# The README's two commands: `make app` and `make test`. Both set up .venv first (once; again
# when requirements.txt changes). pip, not uv/poetry: torch comes from this machine kind's
# local wheel disk, which only pip reads.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: app test bench browser

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

app: $(VENV)/.installed
	$(PY) -m streamlit run app.py

# The browser tests (tests/test_browser.py) drive Debian's Chromium through its ChromeDriver:
# installed here when missing, so `make test` passes alone on a fresh machine.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	    sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$sudo apt-get update -qq && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

test: $(VENV)/.installed browser
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(VENV)/.installed
	$(PY) -m fusion bench predict --json
