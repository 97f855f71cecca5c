"""The only Streamlit-aware code outside pages/: cached resources, the browser session, charts."""
