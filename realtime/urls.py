from django.urls import path

from realtime import views

app_name = "realtime"
urlpatterns = [
    path("", views.home, name="home"),
]
