from django.urls import path

from demo import views

app_name = "demo"
urlpatterns = [
    path("status/", views.board, name="board"),
    path("status/<str:slug>/", views.service, name="service"),
]
