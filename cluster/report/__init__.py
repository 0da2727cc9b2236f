"""Reports: self-contained HTML pages (Jinja2 templates) with their figures drawn as inline SVG."""
