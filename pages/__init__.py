"""The Streamlit screens. ``ui`` holds what they share; each other module is one page run by ``st.navigation``."""
